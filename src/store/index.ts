export * from './cipher-file';
export * from './errors';
export * from './package-cache';
export * from './volume';
export * from './probe';
export * from './session';
