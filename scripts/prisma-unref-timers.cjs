// Preloaded into the Prisma CLI by src/db/migrate.ts. Prisma 6.19's WebAssembly schema engine
// leaves a 10-second timer armed after `migrate deploy` has finished, which keeps the process
// alive; unreferencing long timers lets it exit as soon as its real work (sockets, output) is done.
'use strict'
const original = global.setTimeout
global.setTimeout = function setTimeoutUnrefLong (fn, ms, ...args) {
  const timer = original.call(this, fn, ms, ...args)
  if (typeof ms === 'number' && ms >= 5000 && timer && typeof timer.unref === 'function') timer.unref()
  return timer
}
