#!/usr/bin/env node
// The `kronlora` command: see `kronlora --help`.
import { main } from '../dist/cli/main.js';

// `kronlora ... | head` closes stdout early: that is not an error.
process.stdout.on('error', (error) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});
process.exitCode = await main(process.argv.slice(2));
