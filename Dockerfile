# Worker image (not built in this repository's CI: its machines have no Docker engine).
# The CUDA execution provider is not in the onnxruntime-node npm package: .npmrc skips its download script, so
# mount or copy libonnxruntime_providers_cuda.so (built for your CUDA) next to libonnxruntime.so.1 under
# node_modules/onnxruntime-node/bin/napi-v6/linux/x64/, as ../shared/device-kit does on our GPU machine.
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json .npmrc tsconfig.json ./
RUN npm ci --no-audit --no-fund
COPY . .
# The native device loop (optional, used with GENQUEUE_DEVICE_LOOP_MAX_BATCH): g++ and the ONNX Runtime C API
# headers that native/build.sh fetches from Debian trixie.
RUN apt-get update -qq && apt-get install -y -qq g++ >/dev/null && npm run build:native \
 && apt-get purge -y -qq g++ >/dev/null && rm -rf /var/lib/apt/lists/*
RUN npm run build && npm prune --omit=dev
CMD ["node", "dist/workers/worker.js"]
