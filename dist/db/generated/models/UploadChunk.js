export {};
//# sourceMappingURL=UploadChunk.js.map