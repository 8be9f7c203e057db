import cliProgress from 'cli-progress';

/** A progress bar on stderr when it is a terminal; silent otherwise (CI logs, pipes). */
export class ProgressBar {
  private readonly bar: cliProgress.SingleBar | undefined;
  private started = false;

  constructor(label: string) {
    if (!process.stderr.isTTY) return;
    this.bar = new cliProgress.SingleBar(
      { format: `${label} [{bar}] {value}/{total} {percentage}% | {eta_formatted} left`, stream: process.stderr, hideCursor: true },
      cliProgress.Presets.shades_classic,
    );
  }

  update(done: number, total: number): void {
    if (!this.bar) return;
    if (!this.started) {
      this.bar.start(total, done);
      this.started = true;
    }
    this.bar.setTotal(total);
    this.bar.update(done);
  }

  stop(): void {
    if (this.started) this.bar?.stop();
  }
}
