// URL paths that some upstream would read as another path than the one a policy glob judged.
// The WHATWG parser (which the globs see) resolves plain and %2e dot segments; these are the
// spellings it leaves alone but servers do not.

/** Percent-encoded "/", "\", "." or NUL: an upstream that decodes them would see another path than the glob did. */
const ENCODED_PATH_TRICK = /%(2f|5c|2e|00)/i;

/**
 * Why some upstream would read `pathname` (as the WHATWG parser wrote it) as another path than
 * the glob judged, or undefined. Beyond encoded separators: `;` path parameters (Tomcat, Spring
 * and Jetty read `/v1/..;/admin` as `/admin`), double encoding (`%252e`, read as `.` by a server
 * that decodes twice), overlong UTF-8 (`%c0%ae`) and segments that are `.`/`..` once decoded
 * and trimmed (`.. `, `..%09`).
 */
export function pathTrickProblem(pathname: string): string | undefined {
  if (ENCODED_PATH_TRICK.test(pathname))
    return `path ${pathname} contains an encoded "/", "\\", "." or NUL (%2F, %5C, %2E, %00), which is refused so path rules cannot be bypassed`;
  if (/;|%3b/i.test(pathname))
    return `path ${pathname} contains a ";" path parameter, which is refused: servers such as Tomcat and Spring read /a/..;/b as /b`;
  if (/%25(2f|5c|2e|00|3b|25)/i.test(pathname))
    return `path ${pathname} contains a double-encoded "/", "\\", ".", ";" or NUL, which is refused: a server that decodes twice would read another path`;
  if (/%(c0|c1|e0%80|f0%80%80)/i.test(pathname))
    return `path ${pathname} contains an overlong UTF-8 sequence, which is refused: some servers decode it as "." or "/"`;
  for (const segment of pathname.split('/')) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      return `path ${pathname} contains an invalid percent-encoding`;
    }
    const trimmed = decoded.replace(/[\s\u0000-\u001f\u007f]+/g, '');
    if (trimmed !== decoded && (trimmed === '.' || trimmed === '..'))
      return `path ${pathname} has a segment some servers read as "${trimmed}" (${JSON.stringify(segment)}), which is refused`;
  }
  return undefined;
}
