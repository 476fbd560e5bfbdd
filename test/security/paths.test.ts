// Client-supplied paths and ids never reach files outside the configured folders: the page's
// static files and the image route, with plain, percent-encoded and absolute traversals. Also
// the viewing-token rule for a remote address, through fastify's request injection (no socket).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDashboard, type DashboardHandle } from '../../dashboard/server.ts';
import { TOKEN, TestSession } from '../dashboard/fixtures.ts';
import { isInsideDir, symlinkTargetOutside } from '../../src/io/paths.ts';

/** A session that reads candidate images from a thumbnail folder, as the live session does. */
class FolderSession extends TestSession {
  readonly requestedIds: string[] = [];
  constructor(private readonly thumbs: string) { super(); }

  override async image(kind: 'stimulus' | 'candidate', id: string): Promise<Uint8Array | undefined> {
    this.requestedIds.push(id);
    const file = join(this.thumbs, `${id}.jpg`);
    return existsSync(file) ? new Uint8Array(readFileSync(file)) : undefined;
  }
}

/** Sends a raw GET whose path is not normalised by a URL parser; returns status and body. */
function rawGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET' }, (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => { body += chunk.toString('latin1'); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const SECRET = 'secret-outside-the-thumbnail-folder';

describe('client paths', () => {
  let handle: DashboardHandle;
  let session: FolderSession;
  let port: number;

  before(async () => {
    const root = mkdtempSync(join(tmpdir(), 'paths-'));
    const thumbs = join(root, 'model', 'thumbs');
    mkdirSync(thumbs, { recursive: true });
    writeFileSync(join(thumbs, 'cat.jpg'), 'JPEG of a cat');
    writeFileSync(join(root, 'model', 'secret.jpg'), SECRET);
    writeFileSync(join(root, 'secret.jpg'), SECRET);
    session = new FolderSession(thumbs);
    handle = await startDashboard(session, { host: '127.0.0.1', port: 0, token: TOKEN });
    port = Number(new URL(handle.url).port);
  });
  after(() => handle.close());

  test('image route serves an id inside the folder', async () => {
    const r = await rawGet(port, '/api/image/candidate/cat');
    assert.equal(r.status, 200);
    assert.equal(r.body, 'JPEG of a cat');
  });

  const imageAttacks = [
    '/api/image/candidate/..%2Fsecret',
    '/api/image/candidate/..%2F..%2Fsecret',
    '/api/image/candidate/%2e%2e%2fsecret',
    '/api/image/candidate/%2e%2e%2F%2e%2e%2Fsecret',
    '/api/image/candidate/..%5Csecret',
    '/api/image/candidate/%2Ftmp%2Fsecret',
    '/api/image/candidate/..',
    '/api/image/candidate/.hidden',
    '/api/image/candidate/cat%00.png',
  ];
  for (const path of imageAttacks) {
    test(`image route rejects ${path.slice('/api/image/candidate/'.length)}`, async () => {
      const before = session.requestedIds.length;
      const r = await rawGet(port, path);
      assert.equal(r.status, 400, `${path}: ${r.status} ${r.body}`);
      assert.ok(!r.body.includes(SECRET), 'no file content leaks');
      assert.match(r.body, /params\/id/, 'the error names the parameter');
      assert.equal(session.requestedIds.length, before, 'the id never reached the session');
    });
  }

  const staticAttacks = [
    '/../package.json', '/../../package.json', '/%2e%2e/package.json', '/%2e%2e%2fpackage.json', '/%2E%2E%2F%2E%2E%2Fpackage.json',
    '/..%2fserver.ts', '/..%5cserver.ts', '/%2e%2e%5cserver.ts', '//etc/passwd', '/%2fetc%2fpasswd', '/app.js/../../server.ts',
    '/%252e%252e%252fserver.ts', '/..;/server.ts',
  ];
  for (const path of staticAttacks) {
    test(`static files reject ${path}`, async () => {
      const r = await rawGet(port, path);
      assert.notEqual(r.status, 200, `${path} answered 200 with ${r.body.slice(0, 80)}`);
      assert.ok(!r.body.includes('"name": "mindeye-rt"'), `${path} leaked package.json`);
      assert.ok(!r.body.includes('startDashboard'), `${path} leaked a source file`);
      assert.ok(!r.body.includes('root:'), `${path} leaked /etc/passwd`);
    });
  }

  test('static files still serve the page', async () => {
    const r = await rawGet(port, '/app.js');
    assert.equal(r.status, 200);
  });

  test('remote viewer needs the token', async () => {
    const remote = '192.0.2.10';
    const page = await handle.app.inject({ method: 'GET', url: '/', remoteAddress: remote });
    assert.equal(page.statusCode, 401);
    assert.match(page.body, /viewing this dashboard needs the session token/);
    const stream = await handle.app.inject({ method: 'GET', url: '/api/status', remoteAddress: remote });
    assert.equal(stream.statusCode, 401);
    const withToken = await handle.app.inject({ method: 'GET', url: `/api/status?token=${TOKEN}`, remoteAddress: remote });
    assert.equal(withToken.statusCode, 200);
    const image = await handle.app.inject({ method: 'GET', url: '/api/image/candidate/cat', remoteAddress: remote });
    assert.equal(image.statusCode, 401, 'images are viewing too');
  });

  test('loopback viewer needs no token but control does', async () => {
    for (const address of ['127.0.0.1', '::1', '::ffff:127.0.0.1']) {
      const page = await handle.app.inject({ method: 'GET', url: '/api/status', remoteAddress: address });
      assert.equal(page.statusCode, 200, `${address} views without a token`);
      const control = await handle.app.inject({ method: 'POST', url: '/api/control/pause', remoteAddress: address });
      assert.equal(control.statusCode, 401, `${address} needs the token for control`);
    }
  });
});

describe('path helpers', () => {
  test('isInsideDir rejects traversal and absolute paths', () => {
    assert.equal(isInsideDir('/models/demo', 'thumbs/cat.jpg'), true);
    assert.equal(isInsideDir('/models/demo', 'a/../b.onnx'), true);
    assert.equal(isInsideDir('/models/demo', '../other/b.onnx'), false);
    assert.equal(isInsideDir('/models/demo', 'a/../../b.onnx'), false);
    assert.equal(isInsideDir('/models/demo', '/etc/passwd'), false);
    assert.equal(isInsideDir('/models/demo', '/models/demo-evil/x'), false);
  });

  test('symlinkTargetOutside finds links out of the folder', () => {
    const root = mkdtempSync(join(tmpdir(), 'links-'));
    const dir = join(root, 'export');
    mkdirSync(dir);
    writeFileSync(join(dir, 'real.nii'), 'inside');
    writeFileSync(join(root, 'private.nii'), 'outside');
    symlinkSync(join(dir, 'real.nii'), join(dir, 'inside-link.nii'));
    symlinkSync(join(root, 'private.nii'), join(dir, 'outside-link.nii'));
    symlinkSync(join(root, 'missing.nii'), join(dir, 'broken-link.nii'));
    assert.equal(symlinkTargetOutside(join(dir, 'real.nii'), dir), undefined, 'a regular file');
    assert.equal(symlinkTargetOutside(join(dir, 'inside-link.nii'), dir), undefined, 'a link inside the folder');
    assert.match(symlinkTargetOutside(join(dir, 'outside-link.nii'), dir) ?? '', /private\.nii$/);
    assert.equal(symlinkTargetOutside(join(dir, 'broken-link.nii'), dir), '(broken link)');
  });
});
