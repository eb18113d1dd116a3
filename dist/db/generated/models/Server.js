export {};
//# sourceMappingURL=Server.js.map