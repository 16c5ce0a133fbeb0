// `residual explain`: the degradation, gradient-flow, identity-mapping and residual-magnitude experiments.
export * from './explain.js';
export * from './measure.js';
export { figureSpecs, writeFigures, type ExplainData } from './figures.js';
