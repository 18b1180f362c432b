import net from 'node:net';

/**
 * Asks the kernel for an unused TCP port on the loopback interface.
 *
 * The port is released before this resolves, so another process could take it
 * before the caller binds; for throwaway test servers on loopback that window
 * is small enough, and the caller's bind fails loudly if it is ever lost.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close();
        reject(new Error('listening on 127.0.0.1:0 did not yield a TCP port'));
        return;
      }
      server.close((err) => (err ? reject(err) : resolve(address.port)));
    });
  });
}
