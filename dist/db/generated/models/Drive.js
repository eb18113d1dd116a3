export {};
//# sourceMappingURL=Drive.js.map