// The command loop of the bench's long-lived children: each stdin line is
// `<command> <args...>`, run one after another in arrival order; a failing
// command prints its error and exits 3; at stdin EOF, `atEnd` runs after the
// last command, then the process exits 0.
import { createInterface } from 'node:readline';

export function serveCommands(commands, atEnd) {
  let chain = Promise.resolve();
  createInterface({ input: process.stdin }).on('line', (line) => {
    const [cmd, ...args] = line.split(' ');
    chain = chain.then(() => commands[cmd](...args));
    chain.catch((err) => {
      console.error(err);
      process.exit(3);
    });
  });
  process.stdin.on('end', () => chain.then(atEnd).then(() => process.exit(0)));
}
