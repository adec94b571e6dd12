export * from './constants';
export * from './errors';
export * from './header';
export * from './sizes';
export * from './package';
export * from './stream';
export { ByteSource, ChunkReader } from './chunks';
export * from './symlink';
export * from './names';
