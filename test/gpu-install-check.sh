#!/usr/bin/env bash
# The CUDA install path checked on the GPU machine (not part of npm test: needs a GPU and the device kit).
# After `bash ../shared/device-kit/prepare.sh` here, with dist/ built: one call carrying .device-kit/a,
# .device-kit/app, .device-kit/setup.sh, dist, native/build runs `bash .device-kit/setup.sh .`; the next call,
# while the machine is still warm, carries .device-kit/b, .device-kit/setup.sh, dist, native/build and runs
# `bash test/gpu-install-check.sh`. Expected: 1 all ok (exit 0); 2 four tokens; 3 doctor names the provider
# missing with its fix (exit 1) and generate fails with one line; 4 install-cuda links it, doctor ok, generate
# runs; 5 relinks from the cache; 6 the library API on cuda:0; 7 one line when no GPU is visible.
set -uo pipefail
bash .device-kit/setup.sh . >/dev/null
source /opt/kit/env.sh
G="node dist/src/cli/main.js"
export GENQUEUE_CACHE_DIR=/tmp/gq-cache GENQUEUE_LOG_LEVEL=warn
ORT=$(node -p "require('path').dirname(require.resolve('onnxruntime-node/package.json'))")/bin/napi-v6/linux/x64
echo "== ORT dir: $ORT"; ls -la "$ORT"
echo "== 1. doctor with the kit's provider in place"; $G doctor; echo "rc=$?"
echo "== 2. generate on cuda:0"; $G generate --model test/fixtures/gpt2-tiny --prompt "Hello world" --max-new-tokens 4 --device cuda:0 --json; echo "rc=$?"
echo "== 3. provider removed: doctor and generate"
mkdir -p /tmp/prov && cp -L "$ORT"/libonnxruntime_providers_cuda.so "$ORT"/libonnxruntime_providers_shared.so /tmp/prov/ && rm -f "$ORT"/libonnxruntime_providers_cuda.so "$ORT"/libonnxruntime_providers_shared.so
$G doctor; echo "rc=$?"
$G generate --model test/fixtures/gpt2-tiny --prompt "Hello world" --max-new-tokens 4 --device cuda:0; echo "rc=$?"
echo "== 4. install-cuda --from a folder, then doctor and generate"
$G install-cuda --from /tmp/prov; echo "rc=$?"; ls -la "$ORT"
$G doctor; echo "rc=$?"
$G generate --model test/fixtures/gpt2-tiny --prompt "Hello world" --max-new-tokens 4 --device cuda:0 --json; echo "rc=$?"
echo "== 5. relink from the cache (as after npm ci)"; rm -f "$ORT"/libonnxruntime_providers_*.so; $G install-cuda; echo "rc=$?"
echo "== 6. library openEngine on cuda:0"
# A module inside the package, so that `import … from 'genqueue'` resolves to this checkout (package self-reference).
check=$(mktemp -p . --suffix .mjs)
cat > "$check" <<'JS'
import { openEngine } from 'genqueue';
const e = await openEngine({ model: 'test/fixtures/gpt2-tiny', device: 'cuda:0', cacheDir: '/tmp/gq-cache' });
console.log(e.device, JSON.stringify(await e.generate(['Hello world'])));
await e.close();
JS
node "$check"; echo "rc=$?"; rm -f "$check"
echo "== 7. no GPU visible"; CUDA_VISIBLE_DEVICES= $G generate --model test/fixtures/gpt2-tiny --prompt "Hello" --device cuda:0 2>&1 | tail -3; echo "rc=$?"
