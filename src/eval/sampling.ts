/**
 * Top-1 retrieval among N candidates, as MindEye reports it (Scotti et al. 2023, arXiv
 * 2305.18274): the true candidate competes with N-1 others drawn at random from the pool, the
 * draw is repeated, and the hits are averaged. MindEye draws 30 subsets of 300 test images.
 *
 * A query is summarised by its pool size (candidates including the true one) and by `better`,
 * the number of other candidates ranked above the true one. A draw is a hit
 * when none of those `better` candidates is among the N-1 drawn, so only ranks are needed, not
 * the embeddings. Each query draws from its own stream, seeded by (seed, query key), so a
 * query's result does not depend on which other queries are evaluated with it.
 */
import { MindeyeError } from '../errors.ts';
import { Prng, hash32 } from '../sim/prng.ts';

export interface RankedQuery {
  /** Stable identity of the query (a trial id); it seeds the query's random stream. */
  key: number | string;
  /** Candidates in the pool, the true one included. */
  pool: number;
  /** Other candidates ranked above the true one (the caller's ranking decides ties). */
  better: number;
}

export interface AmongNSettings {
  /** Candidates per draw, the true one included (N). */
  candidates: number;
  draws: number;
  seed: number;
}

function checkQuery(query: RankedQuery): void {
  const ok = Number.isInteger(query.pool) && query.pool >= 1 && Number.isInteger(query.better) && query.better >= 0 && query.better < query.pool;
  if (!ok) {
    throw new MindeyeError('CLI_USAGE', 'Invalid ranked query for top-1 among N.', {
      field: `query ${query.key}`, value: `pool ${query.pool}, better ${query.better}`,
      expected: 'integers with pool >= 1 and 0 <= better < pool', fix: 'pass the 1-based rank minus one as better',
    });
  }
}

/**
 * Returns the fraction of `draws` draws in which the query's true candidate is the top-1 among
 * min(N, pool) candidates. The N-1 others are drawn without replacement (Floyd's algorithm).
 */
export function topOneHitRate(query: RankedQuery, settings: AmongNSettings): number {
  checkQuery(query);
  const others = Math.min(settings.candidates, query.pool) - 1;
  if (query.better === 0) return 1;
  if (others === query.pool - 1) return 0;
  const rng = new Prng(hash32(settings.seed, 'top-1 among N', query.key));
  const space = query.pool - 1;
  let hits = 0;
  for (let d = 0; d < settings.draws; d++) {
    // Floyd's algorithm draws `others` distinct indices from [0, space). Indices below
    // `better` stand for the candidates that beat the true one.
    const chosen = new Set<number>();
    let beaten = false;
    for (let j = space - others; j < space && !beaten; j++) {
      const t = rng.int(j + 1);
      const pick = chosen.has(t) ? j : t;
      chosen.add(pick);
      if (pick < query.better) beaten = true;
    }
    if (!beaten) hits++;
  }
  return hits / settings.draws;
}

/**
 * Returns the expected top-1 hit rate of a query among min(N, pool) candidates: the
 * probability that N-1 others drawn from pool-1 miss all `better` ones,
 * C(pool-1-better, N-1) / C(pool-1, N-1). The draws converge to it.
 */
export function expectedTopOne(query: RankedQuery, candidates: number): number {
  checkQuery(query);
  const others = Math.min(candidates, query.pool) - 1;
  const space = query.pool - 1;
  let p = 1;
  for (let i = 0; i < others; i++) {
    p *= (space - query.better - i) / (space - i);
    if (p <= 0) return 0;
  }
  return p;
}

/** Returns the mean hit rate over the queries (undefined when there are none). */
export function meanTopOne(queries: readonly RankedQuery[], settings: AmongNSettings): number | undefined {
  if (queries.length === 0) return undefined;
  let sum = 0;
  for (const q of queries) sum += topOneHitRate(q, settings);
  return sum / queries.length;
}
