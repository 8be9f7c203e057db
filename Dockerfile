# CUDA worker image. Not built in this repository's CI (its machines have no Docker engine), so check an image
# with `docker run --rm --gpus all IMAGE node dist/src/cli/main.js doctor` before deploying it.
#
# Stage 1 builds on Node's image: dependencies, the device-loop addon, the TypeScript, and ONNX Runtime 1.29's
# CUDA 13 provider (`genqueue install-cuda`: fetched with npm, kept in /opt/genqueue-cuda, linked into
# node_modules/onnxruntime-node). Stage 2 runs on NVIDIA's CUDA 13 runtime image, which carries what
# `genqueue doctor` checks: libcudart.so.13, libcublas.so.13, libcublasLt.so.13, libcurand.so.10 (the provider's
# libraries) and libnvrtc.so.13 (the device loop); the driver and libcuda.so.1 come from the host (--gpus).
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu24.04

FROM node:20-bookworm AS build
WORKDIR /app
# Node 20's npm does not read package.json's allowScripts: skip onnxruntime-node's own provider download here.
ENV ONNXRUNTIME_NODE_INSTALL=skip
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --no-audit --no-fund
COPY . .
# native/build.sh needs g++ (in this image) and fetches ONNX Runtime's C API headers with apt-get download.
RUN npm run build:native && npm run build \
 && GENQUEUE_CACHE_DIR=/opt/genqueue-cuda node dist/src/cli/main.js install-cuda \
 && npm prune --omit=dev

FROM ${CUDA_IMAGE}
COPY --from=build /usr/local/bin/node /usr/local/bin/node
COPY --from=build /opt/genqueue-cuda /opt/genqueue-cuda
COPY --from=build /app /app
WORKDIR /app
ENV GENQUEUE_CACHE_DIR=/cache GENQUEUE_DEVICE=cuda:0
CMD ["node", "dist/workers/worker.js"]
