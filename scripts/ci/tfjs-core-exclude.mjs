// Tests of tfjs-core's suite that scripts/ci/tfjs-core-tests.mjs does not run on the residual backend, each
// with the reason: { test: a substring of the full spec name (as jasmine prints it; the env name is
// "peer" for both backends, so names read "<describe> peer {} <it>"), reason: why }. Only a real
// limitation belongs here (test/parity/tfjs-core-suite.test.ts checks that every entry has a reason and still
// matches a test).
//
// Empty: every test of the suite that passes on tfjs-backend-cpu runs on residual, including the
// kernels only the cpu backend registers (string n-grams/split/hash, ragged and sparse kernels, image
// transform, maxPoolWithArgmax: lib/tfjs/kernels/{string,ragged,sparse,segment,image,pool}.ts).
export const exclude = [];
