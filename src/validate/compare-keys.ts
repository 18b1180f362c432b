/**
 * Compares two keys in S3's listing order: the binary order of their UTF-8
 * bytes, which is also Postgres' order under `COLLATE "C"` in a UTF-8
 * database.
 *
 * JavaScript's `<` compares UTF-16 code units, which agrees with UTF-8 byte
 * order everywhere except between a surrogate (a character above U+FFFF) and
 * a character in U+E000..U+FFFF: UTF-16 puts the surrogate first, UTF-8 last.
 * Only that case is corrected, so no buffer is allocated per comparison.
 */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) {
      // Move surrogates (D800..DFFF) above E000..FFFF, keeping each range's order.
      x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    }
    return x - y;
  }
  return a.length - b.length;
}
