/** The median of `xs`: of an even count, the mean of the middle two (NaN when empty). */
export function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  if (s.length === 0) return NaN
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}
