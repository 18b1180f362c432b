import { Help, type HelpConfiguration } from 'commander';

/**
 * Help text that breaks between sentences, not in the middle of one: the
 * descriptions are written as prose, each sentence starts a line, and only
 * a sentence longer than the terminal is wrapped (at a word). Lines that
 * start with `-` are list items and stay lines of their own.
 */
export function sentenceLines(text: string): string {
  const merged: string[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trimEnd();
    const item = /^\s*-\s/.test(line);
    if (merged.length > 0 && line !== '' && !item && merged.at(-1) !== '') merged[merged.length - 1] += ` ${line.trim()}`;
    else merged.push(item ? line.trim() : line.trim());
  }
  return merged.map((line) => line.replace(/(?<=[.!?])\s+(?=[A-Z`(])/g, '\n')).join('\n');
}

/** `configureHelp` settings for every command. */
export const HELP_CONFIG: HelpConfiguration = {
  boxWrap(this: Help, str: string, width: number): string {
    return sentenceLines(str)
      .split('\n')
      .map((line) =>
        // A list item's continuation lines hang under its text.
        line.startsWith('- ') ? Help.prototype.boxWrap.call(this, line, width - 2).replace(/\n/g, '\n  ') : Help.prototype.boxWrap.call(this, line, width),
      )
      .join('\n');
  },
};
