// The host key that signs audit heads and checkpoints (Ed25519, kept in the state folder).
// A hash chain shows that records were not changed in place, but anyone who can write the file
// can also cut its end off or rewrite it whole with fresh hashes; a signature by a key the agent
// never sees anchors a head (`airlock audit head`, checkpoint and rotation records) so that
// `airlock audit verify` can tell.
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  verify,
  type KeyObject,
} from 'node:crypto';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

export interface AuditSigner {
  keyId: string;
  publicKeyPem: string;
  /** Signature (base64) over the head `seq`:`hash`. */
  sign(seq: number, hash: string): string;
}

export interface AuditVerifier {
  keyId: string;
  verify(seq: number, hash: string, signature: string): boolean;
}

/** `<stateDir>/audit/signing-key.pem` (0600) and its public half next to it (0644). */
export function auditKeyPaths(stateDir: string): { privateKey: string; publicKey: string } {
  const dir = path.join(stateDir, 'audit');
  return { privateKey: path.join(dir, 'signing-key.pem'), publicKey: path.join(dir, 'signing-key.pub.pem') };
}

function headMessage(seq: number, hash: string): Buffer {
  return Buffer.from(`airlock audit head v1\nseq=${seq}\nhash=${hash}\n`);
}

function keyIdOf(publicKey: KeyObject): string {
  return (
    'ed25519:' +
    createHash('sha256')
      .update(publicKey.export({ type: 'spki', format: 'der' }))
      .digest('hex')
      .slice(0, 32)
  );
}

function verifierFor(publicKey: KeyObject): AuditVerifier {
  return {
    keyId: keyIdOf(publicKey),
    verify: (seq, hash, signature) => {
      try {
        return verify(null, headMessage(seq, hash), publicKey, Buffer.from(signature, 'base64'));
      } catch {
        return false;
      }
    },
  };
}

/** The host's signing key, created on first use. */
export async function loadOrCreateAuditSigner(stateDir: string): Promise<AuditSigner> {
  const paths = auditKeyPaths(stateDir);
  let pem: string;
  try {
    pem = await readFile(paths.privateKey, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await mkdir(path.dirname(paths.privateKey), { recursive: true, mode: 0o700 });
    const { privateKey } = generateKeyPairSync('ed25519');
    pem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    try {
      // wx: two processes starting at once keep the first key.
      const fh = await open(paths.privateKey, 'wx', 0o600);
      await fh.writeFile(pem);
      await fh.sync();
      await fh.close();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      pem = await readFile(paths.privateKey, 'utf8');
    }
  }
  const privateKey = createPrivateKey(pem);
  const publicKey = createPublicKey(privateKey);
  const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' }) as string;
  await writeFile(paths.publicKey, publicKeyPem, { mode: 0o644 }).catch(() => undefined);
  return {
    keyId: keyIdOf(publicKey),
    publicKeyPem,
    sign: (seq, hash) => sign(null, headMessage(seq, hash), privateKey).toString('base64'),
  };
}

/** The verifier of the host key (from its public half), or undefined when there is none. */
export async function loadAuditVerifier(stateDir: string): Promise<AuditVerifier | undefined> {
  const paths = auditKeyPaths(stateDir);
  for (const [file, load] of [
    [paths.publicKey, (pem: string) => createPublicKey(pem)],
    [paths.privateKey, (pem: string) => createPublicKey(createPrivateKey(pem))],
  ] as const) {
    try {
      return verifierFor(load(await readFile(file, 'utf8')));
    } catch {
      // try the next
    }
  }
  return undefined;
}

/** A verifier for a PEM public key given by the operator (e.g. copied off the host). */
export function verifierFromPem(pem: string): AuditVerifier {
  return verifierFor(createPublicKey(pem));
}
