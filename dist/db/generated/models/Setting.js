export {};
//# sourceMappingURL=Setting.js.map