#include "residual.h"
namespace residual {
void initData(Napi::Env env, Napi::Object exports) {}
}
