export {};
//# sourceMappingURL=TransferLink.js.map