// Times one training step (forward, backward, Adam update) of a single 3x3 convolution,
// 16 to 16 channels on a batch of 32 images of 64x64, with TensorFlow.js's pure-JavaScript CPU
// backend. docs/demo-model.md compares it with PyTorch to explain why the demo trains in
// PyTorch. Run: node tools/demo/bench_tfjs_conv.mjs
import * as tf from '@tensorflow/tfjs';

await tf.setBackend('cpu');
const input = tf.randomNormal([32, 64, 64, 16]);
const kernel = tf.variable(tf.randomNormal([3, 3, 16, 16], 0, 0.1));
const optimizer = tf.train.adam(1e-3);
const step = () => optimizer.minimize(() => tf.conv2d(input, kernel, 1, 'same').square().mean());

step(); // warm-up
const started = performance.now();
const repeats = 3;
for (let i = 0; i < repeats; i++) step();
process.stdout.write(`tfjs ${tf.version_core} ${tf.getBackend()} backend: ${((performance.now() - started) / repeats).toFixed(0)} ms per conv training step\n`);
