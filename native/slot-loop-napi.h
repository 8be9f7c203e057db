// The slot loop's functions on the addon's exports (slot-loop-napi.cc).
#pragma once
#include <node_api.h>

namespace genqueue {

void defineSlotLoopExports(napi_env env, napi_value exports);

}  // namespace genqueue
