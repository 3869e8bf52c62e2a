#!/usr/bin/env node
// The command line's entry. The tunnel restarts Node with its memory flags
// (src/cli/memory.ts) before it loads anything: for `dp-tcp client|server ...`
// this happens here, before even the parser (program.ts), so the first image
// costs Node's start and little more. Loaded first, the parser, the logger and
// the tunnel's modules were loaded twice: about 0.3 s of CPU a start, 10 s when
// 32 clients start at once on 2 cores.
import { restartWithHeapFlags } from './memory.js';

if (process.argv[2] === 'client' || process.argv[2] === 'server') restartWithHeapFlags();
await import('./program.js');
