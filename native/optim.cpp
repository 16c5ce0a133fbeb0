#include "residual.h"
namespace residual {
void initOptim(Napi::Env env, Napi::Object exports) {}
}
