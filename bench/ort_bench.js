#!/usr/bin/env node
// ONNX Runtime (onnxruntime-node, CPU) peer of `vitq bench`: forward latency of an ONNX model
// on a random input. Prints (and with --json writes) {"ms_per_batch": [...], ...}.
//
//   node bench/ort_bench.js --model vit.onnx --batch 8 --threads 2 --warmup 3 --iters 20 [--json out.json]
//
// Session: graphOptimizationLevel 'all', intraOpNumThreads = --threads, interOpNumThreads 1,
// sequential execution. --input/--output read/write raw little-endian float32 (for parity checks).
'use strict';

const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

const USAGE = `usage: node ort_bench.js --model FILE [--batch B] [--threads T] [--warmup W] [--iters N]
                        [--json FILE] [--input RAW_F32] [--output RAW_F32]`;

function parseArgs(argv) {
  const a = { model: null, batch: 1, threads: 1, warmup: 3, iters: 20, json: null, input: null, output: null };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '-h' || k === '--help') {
      console.log(USAGE);
      process.exit(0);
    }
    const key = k.replace(/^--/, '');
    if (!k.startsWith('--') || !(key in a) || i + 1 >= argv.length) {
      console.error(`ort_bench: bad argument '${k}'\n${USAGE}`);
      process.exit(2);
    }
    const v = argv[++i];
    a[key] = typeof a[key] === 'number' ? Number(v) : v;
  }
  if (!a.model) {
    console.error(`ort_bench: --model is required\n${USAGE}`);
    process.exit(2);
  }
  for (const k of ['batch', 'threads', 'iters']) {
    if (!Number.isInteger(a[k]) || a[k] < 1) {
      console.error(`ort_bench: --${k} must be a positive integer`);
      process.exit(2);
    }
  }
  return a;
}

// Deterministic standard-normal-ish values (sum of uniforms), like vitq bench's random input.
function randomInput(n) {
  const x = new Float32Array(n);
  let s = 12345;
  const u = () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s / 4294967296;
  };
  for (let i = 0; i < n; i++) x[i] = u() + u() + u() + u() - 2;
  return x;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const session = await ort.InferenceSession.create(a.model, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: a.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
  });
  const meta = session.inputMetadata && session.inputMetadata[0];
  const dims = meta && meta.shape && meta.shape.length === 4 ? meta.shape.slice(1).map(Number) : [3, 224, 224];
  if (dims.some((d) => !Number.isInteger(d))) throw new Error(`input shape ${meta.shape} has a non-batch symbolic dim`);
  const shape = [a.batch, ...dims];
  const n = shape.reduce((p, d) => p * d, 1);
  let data;
  if (a.input) {
    const buf = fs.readFileSync(a.input);
    if (buf.length !== 4 * n) throw new Error(`${a.input}: ${buf.length} bytes, expected ${4 * n}`);
    data = new Float32Array(buf.buffer, buf.byteOffset, n);
  } else {
    data = randomInput(n);
  }
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', data, shape) };

  let out;
  for (let i = 0; i < a.warmup; i++) out = await session.run(feeds);
  const ms = [];
  for (let i = 0; i < a.iters; i++) {
    const t0 = process.hrtime.bigint();
    out = await session.run(feeds);
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  if (a.output) {
    const y = out[session.outputNames[0]].data;
    fs.writeFileSync(a.output, Buffer.from(y.buffer, y.byteOffset, y.byteLength));
  }
  const sorted = [...ms].sort((p, q) => p - q);
  const result = {
    engine: 'onnxruntime-node',
    version: require(path.join(path.dirname(require.resolve('onnxruntime-node')), '..', 'package.json')).version,
    model: a.model,
    batch: a.batch,
    intra_op_threads: a.threads,
    inter_op_threads: 1,
    ms_per_batch: ms,
    median_ms_per_image: sorted[Math.floor(sorted.length / 2)] / a.batch,
  };
  const text = JSON.stringify(result, null, 2);
  if (a.json) fs.writeFileSync(a.json, text + '\n');
  console.log(text);
  await session.release();
}

main().catch((e) => {
  console.error(`ort_bench: error: ${e && e.message ? e.message : e}`);
  process.exit(1);
});
