/**
 * Secrets never leave the process: every URL or message that might carry one
 * passes through here before it is printed, logged or stored.
 */

/** `postgres://user:secret@host/db` becomes `postgres://user:***@host/db`. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    // Not a URL we can parse: hide anything between "//user:" and "@".
    return url.replace(/(\/\/[^:/@\s]*:)[^@\s]*@/g, '$1***@');
  }
}

/** Secrets known to this process, collected from its configuration. */
const knownSecrets = new Set<string>();

/** Registers a secret so that `redact` hides it wherever it appears. */
export function registerSecret(secret: string | undefined): void {
  if (secret && secret.length >= 4) knownSecrets.add(secret);
}

/** Hides every registered secret and every URL password in `text`. */
export function redact(text: string): string {
  let out = text.replace(/([a-z][a-z0-9+.-]*:\/\/[^:/@\s]*:)[^@\s]*@/gi, '$1***@');
  for (const secret of knownSecrets) out = out.split(secret).join('***');
  for (const secret of knownSecrets) {
    const encoded = encodeURIComponent(secret);
    if (encoded !== secret) out = out.split(encoded).join('***');
  }
  return out;
}
