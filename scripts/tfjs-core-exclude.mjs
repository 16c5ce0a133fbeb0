// Tests of tfjs-core's suite that scripts/tfjs-core-tests.mjs does not run on the residual backend, each
// with the reason. `test` is a substring of the full spec name (as jasmine prints it, env name "peer").
export const exclude = [];
