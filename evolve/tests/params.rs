//! Parameter evolution end to end at the module level: configurations the search proposes are
//! modules that run with those parameters (the cache's fuel follows its capacity), the search is
//! reproducible from its seed, and placebos behave exactly like their original.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use arbor_agent::wasm::{AgentLimits, Capabilities, EngineConfig, WasmBehaviour, WasmHost};
use arbor_agent::{Behaviour, Host};
use arbor_evolve::{
    CandidateSource, Genetic, GeneticConfig, Offer, ParameterSearch, Parent, Placebos, Request,
    Value, params_of, space_of, with_params,
};
use arbor_modules::cache::{CacheMsg, CacheParams, CacheReply};
use arbor_modules::{CACHE, KV};
use arbor_vault::{ModuleHash, Origin};
use support::cache_params;

fn host() -> WasmHost {
    WasmHost::new(EngineConfig {
        max_instances: 64,
        ..EngineConfig::default()
    })
    .unwrap()
}

fn run(host: &WasmHost, module: &[u8], inputs: &[Vec<u8>]) -> (Vec<Vec<u8>>, u64) {
    let loaded = host.load(module).unwrap();
    let mut agent = WasmBehaviour::init(
        host,
        &loaded,
        AgentLimits::default(),
        Capabilities::none(),
        b"",
    )
    .unwrap();
    let mut fuel = 0;
    let replies = inputs
        .iter()
        .map(|input| {
            let reply = agent.handle(input, &mut Host::replay(Vec::new())).unwrap();
            fuel += agent.last_cost().fuel.unwrap();
            reply
        })
        .collect();
    (replies, fuel)
}

fn workload() -> Vec<Vec<u8>> {
    let mut inputs = Vec::new();
    for key in 0..20u32 {
        let put = CacheMsg::Put {
            key,
            value: format!("record {key}"),
        };
        inputs.push(rmp_serde::to_vec_named(&put).unwrap());
    }
    // Reads concentrated on a few keys.
    for round in 0..200u32 {
        let key = [0, 1, 2, 3, 0, 1, 0, 7 + round % 13][round as usize % 8];
        inputs.push(rmp_serde::to_vec_named(&CacheMsg::Get { key }).unwrap());
    }
    inputs
}

#[test]
fn a_configuration_is_a_module_that_runs_with_it() {
    let host = host();
    let inputs = workload();
    let (plain, plain_fuel) = run(&host, CACHE, &inputs);
    let mut results = Vec::new();
    for capacity in [0, 4, 16, 256] {
        let module = with_params(CACHE, &cache_params(capacity, "lru", 1)).unwrap();
        let (replies, fuel) = run(&host, &module, &inputs);
        // Same answers under every configuration: only the cost differs.
        assert_eq!(replies, plain, "capacity {capacity}");
        let last: CacheReply = rmp_serde::from_slice(replies.last().unwrap()).unwrap();
        assert!(matches!(last, CacheReply::Value { value: Some(_) }));
        results.push((capacity, fuel));
    }
    let fuel = |c: i64| results.iter().find(|(cap, _)| *cap == c).unwrap().1;
    // No cache decodes every read; a cache that holds the hot keys reads them cheaply.
    assert!(fuel(16) * 2 < fuel(0), "{results:?}");
    assert!(fuel(4) < fuel(0), "{results:?}");
    // The module's defaults (capacity 4, fifo) are what it runs with when given none.
    let defaults = CacheParams::default();
    assert_eq!(defaults.capacity, 4);
    assert_ne!(plain_fuel, fuel(0));
}

fn propose_all(source: &mut dyn CandidateSource, parents: &[Parent], n: usize) -> Vec<Offer> {
    source.propose(&Request { parents, max: n }).unwrap()
}

#[test]
fn the_search_proposes_modules_in_the_space_reproducibly_and_learns() {
    let space = space_of(CACHE).unwrap();
    let config = GeneticConfig {
        population: 6,
        seed: 9,
        ..GeneticConfig::default()
    };
    let generations = |seed_config: GeneticConfig| {
        let mut search =
            ParameterSearch::new(CACHE, Genetic::new(space.clone(), seed_config).unwrap()).unwrap();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let offers = propose_all(&mut search, &[], 100);
            assert!(!offers.is_empty());
            let mut results = Vec::new();
            for offer in offers {
                let Offer::Candidate(candidate) = offer else {
                    panic!("a refused configuration");
                };
                let params = params_of(&candidate.bytes).unwrap().unwrap();
                space.check(&params).unwrap();
                assert_eq!(candidate.parents, vec![ModuleHash::of(CACHE)]);
                assert!(matches!(candidate.origin, Origin::Params { .. }));
                // Fitter with a capacity near 12.
                let Value::Int(capacity) = params.0["capacity"] else {
                    panic!()
                };
                let hash = ModuleHash::of(&candidate.bytes);
                results.push((hash, Some(-((capacity - 12).abs() as f64))));
                seen.push(params);
            }
            // Nothing more until this generation is scored.
            assert!(propose_all(&mut search, &[], 100).is_empty());
            search.learn(&results);
        }
        (seen, search.search().best().cloned())
    };
    let (one, best_one) = generations(config.clone());
    let (two, best_two) = generations(config.clone());
    assert_eq!(one, two);
    assert_eq!(best_one, best_two);
    let (three, _) = generations(GeneticConfig { seed: 10, ..config });
    assert_ne!(one, three);
}

#[test]
fn placebos_behave_exactly_like_their_original() {
    let host = host();
    let inputs: Vec<Vec<u8>> = (0..50)
        .map(|i| {
            let msg = if i % 2 == 0 {
                arbor_modules::kv::KvMsg::Put {
                    key: format!("k{i}"),
                    value: format!("v{i}"),
                }
            } else {
                arbor_modules::kv::KvMsg::Get {
                    key: format!("k{}", i - 1),
                }
            };
            rmp_serde::to_vec_named(&msg).unwrap()
        })
        .collect();
    let parent = Parent {
        module: ModuleHash::of(KV),
        bytes: Arc::from(KV),
    };
    let mut placebos = Placebos::new();
    let offers = propose_all(&mut placebos, std::slice::from_ref(&parent), 3);
    assert_eq!(offers.len(), 3);
    let original = run(&host, KV, &inputs);
    let mut hashes = vec![ModuleHash::of(KV)];
    for offer in offers {
        let Offer::Candidate(candidate) = offer else {
            panic!()
        };
        assert_eq!(run(&host, &candidate.bytes, &inputs), original);
        hashes.push(ModuleHash::of(&candidate.bytes));
    }
    hashes.sort();
    hashes.dedup();
    assert_eq!(hashes.len(), 4, "every placebo is a new module");
}
