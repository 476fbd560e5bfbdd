/** Describes the machine a benchmark ran on: CPU, memory, GPU, runtime versions and load. */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';

export interface MachineInfo {
  cpuModel: string;
  cpuCores: number;
  memoryGb: number;
  /** GPU names from nvidia-smi, or why none is listed. */
  gpu: string;
  node: string;
  platform: string;
  onnxruntime: string;
  loadAverageStart: number;
  loadAverageEnd?: number;
}

function nvidiaGpus(): string {
  const result = spawnSync('nvidia-smi', ['--query-gpu=name,memory.total', '--format=csv,noheader'], { encoding: 'utf8', timeout: 10_000 });
  if (result.error !== undefined) return 'none found (nvidia-smi is not installed)';
  if (result.status !== 0) return `none found (nvidia-smi exited with status ${result.status})`;
  const names = result.stdout.trim().split('\n').filter((l) => l.trim() !== '');
  return names.length > 0 ? names.join('; ') : 'none found (nvidia-smi lists no GPU)';
}

function onnxruntimeVersion(): string {
  try {
    const file = new URL('../../node_modules/onnxruntime-node/package.json', import.meta.url);
    return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

export function describeMachine(): MachineInfo {
  const list = cpus();
  return {
    cpuModel: list[0]?.model.trim() ?? 'unknown CPU',
    cpuCores: list.length,
    memoryGb: Math.round(totalmem() / 2 ** 30),
    gpu: nvidiaGpus(),
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    onnxruntime: onnxruntimeVersion(),
    loadAverageStart: loadavg()[0],
  };
}
