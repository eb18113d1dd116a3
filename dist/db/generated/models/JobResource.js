export {};
//# sourceMappingURL=JobResource.js.map