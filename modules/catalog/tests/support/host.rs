//! A minimal ABI v1 host over wasmtime, for running the built modules in tests: every call
//! metered in fuel (the arbiter's unit of cost, counted as the runtime counts it: the input's
//! `arbor_alloc` plus the export), linear memory capped, no imports (the kv family needs none).

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasmtime::{
    Config, Engine, Instance, Memory, Module, Store, StoreLimits, StoreLimitsBuilder, Trap,
    TypedFunc,
};

/// Fuel each call starts with: far more than any test message needs.
const FUEL: u64 = 1 << 40;

/// An engine that meters fuel, as the runtime's does.
pub fn engine() -> Engine {
    let mut config = Config::new();
    config.consume_fuel(true);
    Engine::new(&config).unwrap()
}

/// Why a call failed: the guest's negative error code, or a trap (the instance is then dead).
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    Code(i32),
    Trap(String),
}

/// One instance of a module.
pub struct Guest {
    store: Store<StoreLimits>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    init: TypedFunc<(i32, i32), i32>,
    handle: TypedFunc<(i32, i32), i64>,
    snapshot: TypedFunc<(), i64>,
    restore: TypedFunc<(i32, i32), i32>,
}

impl Guest {
    /// Instantiates `module` with at most `cap_bytes` of linear memory and checks its ABI
    /// version; follow with [`Guest::init`] or [`Guest::restore`].
    pub fn new(engine: &Engine, module: &Module, cap_bytes: usize) -> Guest {
        let limits = StoreLimitsBuilder::new().memory_size(cap_bytes).build();
        let mut store = Store::new(engine, limits);
        store.limiter(|limits| limits);
        store.set_fuel(FUEL).unwrap();
        let instance = Instance::new(&mut store, module, &[]).unwrap();
        let version = instance
            .get_typed_func::<(), i32>(&mut store, "arbor_abi_version")
            .unwrap();
        assert_eq!(version.call(&mut store, ()).unwrap(), 1);
        Guest {
            memory: instance.get_memory(&mut store, "memory").unwrap(),
            alloc: instance.get_typed_func(&mut store, "arbor_alloc").unwrap(),
            init: instance.get_typed_func(&mut store, "arbor_init").unwrap(),
            handle: instance.get_typed_func(&mut store, "arbor_handle").unwrap(),
            snapshot: instance
                .get_typed_func(&mut store, "arbor_snapshot")
                .unwrap(),
            restore: instance
                .get_typed_func(&mut store, "arbor_restore")
                .unwrap(),
            store,
        }
    }

    /// `arbor_init(config)`.
    pub fn init(&mut self, config: &[u8]) -> Result<(), Failure> {
        self.store.set_fuel(FUEL).unwrap();
        let (ptr, len) = self.put(config)?;
        status(self.init.call(&mut self.store, (ptr, len)))
    }

    /// `arbor_restore(state)`.
    pub fn restore(&mut self, state: &[u8]) -> Result<(), Failure> {
        self.store.set_fuel(FUEL).unwrap();
        let (ptr, len) = self.put(state)?;
        status(self.restore.call(&mut self.store, (ptr, len)))
    }

    /// `arbor_snapshot()`.
    pub fn snapshot(&mut self) -> Result<Vec<u8>, Failure> {
        self.store.set_fuel(FUEL).unwrap();
        let packed = self.snapshot.call(&mut self.store, ()).map_err(trap)?;
        self.take(packed)
    }

    /// `arbor_handle(msg)`: the reply and the fuel the call took.
    pub fn handle(&mut self, msg: &[u8]) -> Result<(Vec<u8>, u64), Failure> {
        self.store.set_fuel(FUEL).unwrap();
        let (ptr, len) = self.put(msg)?;
        let packed = self
            .handle
            .call(&mut self.store, (ptr, len))
            .map_err(trap)?;
        let fuel = FUEL - self.store.get_fuel().unwrap();
        Ok((self.take(packed)?, fuel))
    }

    /// Encodes `msg` as the host does, handles it, decodes the reply: the reply and its fuel.
    pub fn call<M: Serialize, R: DeserializeOwned>(
        &mut self,
        msg: &M,
    ) -> Result<(R, u64), Failure> {
        let (reply, fuel) = self.handle(&rmp_serde::to_vec_named(msg).unwrap())?;
        Ok((rmp_serde::from_slice(&reply).unwrap(), fuel))
    }

    /// The size of its linear memory now.
    pub fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }

    /// Copies `bytes` into a buffer from `arbor_alloc`.
    fn put(&mut self, bytes: &[u8]) -> Result<(i32, i32), Failure> {
        let len = i32::try_from(bytes.len()).unwrap();
        let ptr = self.alloc.call(&mut self.store, len).map_err(trap)?;
        assert_ne!(ptr, 0, "arbor_alloc({len}) failed");
        self.memory
            .write(&mut self.store, ptr as u32 as usize, bytes)
            .unwrap();
        Ok((ptr, len))
    }

    /// Copies out the buffer a packed result names.
    fn take(&mut self, packed: i64) -> Result<Vec<u8>, Failure> {
        if packed < 0 {
            return Err(Failure::Code(packed as i32));
        }
        let (ptr, len) = ((packed >> 32) as usize, packed as u32 as usize);
        let mut bytes = vec![0; len];
        self.memory.read(&self.store, ptr, &mut bytes).unwrap();
        Ok(bytes)
    }
}

fn status(result: wasmtime::Result<i32>) -> Result<(), Failure> {
    match result.map_err(trap)? {
        0 => Ok(()),
        code => Err(Failure::Code(code)),
    }
}

fn trap(error: wasmtime::Error) -> Failure {
    Failure::Trap(match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    })
}
