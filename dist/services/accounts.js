// Accounts: scrypt password hashes compared in constant time, and the account commands' logic.
import { randomBytes, scrypt as scryptCb, timingSafeEqual } from 'node:crypto';
const scrypt = (password, salt, keylen, opts) => new Promise((resolve, reject) => scryptCb(password, salt, keylen, opts, (err, key) => err ? reject(err) : resolve(key)));
// N=2^15, r=8, p=1: OWASP's minimum for scrypt; ~50 ms per hash here.
const PARAMS = { N: 32768, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
const KEYLEN = 32;
export async function hashPassword(password) {
    const salt = randomBytes(16);
    const key = await scrypt(password, salt, KEYLEN, PARAMS);
    return `scrypt$${PARAMS.N}$${PARAMS.r}$${PARAMS.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}
export async function verifyPassword(password, stored) {
    const [scheme, n, r, p, salt, key] = stored.split('$');
    if (scheme !== 'scrypt' || !salt || !key)
        return false;
    const expected = Buffer.from(key, 'base64');
    const actual = await scrypt(password, Buffer.from(salt, 'base64'), expected.length, { N: Number(n), r: Number(r), p: Number(p), maxmem: PARAMS.maxmem });
    return actual.length === expected.length && timingSafeEqual(actual, expected);
}
export function generatePassword() {
    return randomBytes(18).toString('base64url');
}
const EMAIL = /^[^\s@]+@[^\s@]+$/;
export class AccountError extends Error {
    name = 'AccountError';
}
export async function addAccount(prisma, email, password) {
    const normalized = email.trim().toLowerCase();
    if (!EMAIL.test(normalized))
        throw new AccountError(`not an email address: ${email}`);
    if (password.length < 8)
        throw new AccountError('the password must have at least 8 characters');
    const existing = await prisma.account.findUnique({ where: { email: normalized } });
    if (existing)
        throw new AccountError(`an account for ${normalized} exists already`);
    return prisma.account.create({ data: { email: normalized, passwordHash: await hashPassword(password) } });
}
export async function setPassword(prisma, email, password) {
    if (password.length < 8)
        throw new AccountError('the password must have at least 8 characters');
    const account = await prisma.account.findUnique({ where: { email: email.trim().toLowerCase() } });
    if (!account)
        throw new AccountError(`no account for ${email}`);
    return prisma.account.update({ where: { id: account.id }, data: { passwordHash: await hashPassword(password) } });
}
export async function removeAccount(prisma, email) {
    const account = await prisma.account.findUnique({ where: { email: email.trim().toLowerCase() } });
    if (!account)
        throw new AccountError(`no account for ${email}`);
    await prisma.account.delete({ where: { id: account.id } });
    return account;
}
/** On a first start with no account at all, creates one and returns its password (printed once). */
export async function bootstrapAccount(prisma) {
    if (await prisma.account.count() > 0)
        return undefined;
    const email = 'admin@clonejobs.local';
    const password = generatePassword();
    try {
        await prisma.account.create({ data: { email, passwordHash: await hashPassword(password) } });
    }
    catch {
        return undefined; // another process created it first
    }
    return { email, password };
}
//# sourceMappingURL=accounts.js.map