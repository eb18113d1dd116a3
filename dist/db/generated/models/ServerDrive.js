export {};
//# sourceMappingURL=ServerDrive.js.map