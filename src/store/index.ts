export * from './cipher-file';
export * from './errors';
export * from './package-cache';
export * from './volume';
export * from './probe';
export * from './session';
export * from './journal';
export { SimulatedCrash, setFaultHook, type FaultAction, type FaultHook, type FaultKind, type FaultOp } from './io';
export * from './fsck';
