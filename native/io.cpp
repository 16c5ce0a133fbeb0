#include "residual.h"
namespace residual {
void initIo(Napi::Env env, Napi::Object exports) {}
}
