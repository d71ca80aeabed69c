//! A run's budget: bounds on what all the templates of one run may build and do,
//! whatever the flow says (issue 15).
//!
//! Three budgets are kept per run, shared by every evaluation of the run:
//!
//! - **bytes** built by templates and actions (an approximation of the memory the
//!   values hold: their string bytes plus [`NODE_BYTES`] per value), charged by every
//!   builtin that builds *before* it allocates;
//! - **work**: evaluation steps and the bytes builtins scan or copy, so that one run's
//!   CPU time is bounded (a regular expression replace over 2 MB is work even when its
//!   output is small);
//! - a **wall deadline** for the whole run, provider calls included (checked by the
//!   engine between steps and around each action).
//!
//! Once a budget is spent it stays spent: every later evaluation of the run fails at
//! once, so a flow cannot go on allocating after its first failure.
//!
//! Evaluation is synchronous inside an async run that may hop threads: the run owns an
//! `Arc<Budget>` (atomics), and [`Scope`](super::Scope) installs it into a thread-local
//! for the duration of one render, where builtins find it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one value node is charged besides its string bytes: roughly the memory of a
/// minijinja or JSON value plus its allocation (a million one-byte strings are not a
/// megabyte).
pub const NODE_BYTES: u64 = 32;

/// Work units a scanned byte costs in a regular expression (the regex engines are
/// about this much slower per byte than a copy).
pub const REGEX_WORK_PER_BYTE: u64 = 32;

/// Default of [`RunLimits::bytes`]: 16 MiB.
pub const DEFAULT_BYTES: u64 = 16 << 20;
/// Default of [`RunLimits::work`]: sized so that one run cannot take more than about
/// 250 ms of CPU on a 2-core build machine (a unit is about one byte copied or scanned,
/// or one evaluation step).
pub const DEFAULT_WORK: u64 = 128 << 20;
/// Default of [`RunLimits::deadline`]: 30 s.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);
/// Default of [`RunLimits::http_timeout_max`]: 60 s.
pub const DEFAULT_HTTP_TIMEOUT_MAX: Duration = Duration::from_secs(60);

/// The budgets of one run (see the [module docs](self)). The defaults are safe for a
/// service exposed to untrusted flows: 16 MiB of built values, ~250 ms of evaluation
/// work, 30 s of wall time, `http_request.timeout` at most 60 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Bytes of values built by templates and actions across the whole run.
    pub bytes: u64,
    /// Evaluation work across the whole run (steps plus bytes scanned or copied).
    pub work: u64,
    /// Wall time for the whole run, provider calls included.
    pub deadline: Duration,
    /// The largest `http_request` `config.timeout` accepted (`check` refuses a larger
    /// literal; a larger templated value fails the action with kind `limit`).
    pub http_timeout_max: Duration,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            bytes: DEFAULT_BYTES,
            work: DEFAULT_WORK,
            deadline: DEFAULT_DEADLINE,
            http_timeout_max: DEFAULT_HTTP_TIMEOUT_MAX,
        }
    }
}

/// Which budget was spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// [`RunLimits::bytes`]
    Bytes,
    /// [`RunLimits::work`]
    Work,
    /// [`RunLimits::deadline`]
    Deadline,
}

/// The counters of one run (shared by its scopes; see the [module docs](self)).
#[derive(Debug)]
pub struct Budget {
    limits: RunLimits,
    bytes: AtomicU64,
    work: AtomicU64,
    /// 0 while nothing is spent, else `Exceeded as u8 + 1` of the first budget spent.
    spent: AtomicU8,
    deadline: Instant,
}

impl Budget {
    /// A fresh budget; the deadline runs from now.
    pub fn new(limits: RunLimits) -> Arc<Budget> {
        Arc::new(Budget {
            limits,
            bytes: AtomicU64::new(0),
            work: AtomicU64::new(0),
            spent: AtomicU8::new(0),
            deadline: Instant::now()
                .checked_add(limits.deadline)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365)),
        })
    }

    /// The limits this budget enforces.
    pub fn limits(&self) -> &RunLimits {
        &self.limits
    }

    /// The instant the run's wall deadline passes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Bytes charged so far.
    pub fn bytes_used(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    /// Work charged so far.
    pub fn work_used(&self) -> u64 {
        self.work.load(Relaxed)
    }

    /// The first budget spent, if any.
    pub fn exceeded(&self) -> Option<Exceeded> {
        match self.spent.load(Relaxed) {
            1 => Some(Exceeded::Bytes),
            2 => Some(Exceeded::Work),
            3 => Some(Exceeded::Deadline),
            _ => None,
        }
    }

    /// Marks `e` spent (the first one spent is the one reported).
    pub fn spend(&self, e: Exceeded) {
        let code = match e {
            Exceeded::Bytes => 1,
            Exceeded::Work => 2,
            Exceeded::Deadline => 3,
        };
        let _ = self.spent.compare_exchange(0, code, Relaxed, Relaxed);
    }

    /// Whether anything may still be evaluated: nothing spent and the deadline not
    /// passed (this reads the clock: call it per render, not per step).
    pub fn check(&self) -> Result<(), Exceeded> {
        if let Some(e) = self.exceeded() {
            return Err(e);
        }
        if Instant::now() >= self.deadline {
            self.spend(Exceeded::Deadline);
            return Err(Exceeded::Deadline);
        }
        Ok(())
    }

    /// Charges `n` bytes about to be built; `false` (and the budget spent) when they
    /// do not fit.
    #[inline]
    pub fn charge_bytes(&self, n: u64) -> bool {
        let used = self.bytes.load(Relaxed).saturating_add(n);
        // A relaxed load and store: one run evaluates on one thread at a time.
        self.bytes.store(used, Relaxed);
        if used > self.limits.bytes {
            self.spend(Exceeded::Bytes);
            return false;
        }
        self.spent.load(Relaxed) == 0
    }

    /// Charges `n` units of work about to be done; `false` (and the budget spent)
    /// when they do not fit.
    #[inline]
    pub fn charge_work(&self, n: u64) -> bool {
        let used = self.work.load(Relaxed).saturating_add(n);
        self.work.store(used, Relaxed);
        if used > self.limits.work {
            self.spend(Exceeded::Work);
            return false;
        }
        self.spent.load(Relaxed) == 0
    }

    /// Bytes still available.
    pub fn bytes_left(&self) -> u64 {
        self.limits.bytes.saturating_sub(self.bytes.load(Relaxed))
    }

    /// The sentence for a spent budget, without the pointer (the engine adds
    /// ` at <pointer>`).
    pub fn message(&self, e: Exceeded) -> String {
        let l = &self.limits;
        match e {
            Exceeded::Bytes => format!(
                "{BUDGET_PREFIX}values built by templates exceed {} ({} bytes)",
                human_bytes(l.bytes),
                l.bytes
            ),
            Exceeded::Work => format!(
                "{BUDGET_PREFIX}evaluation work exceeds {} units (the templates do too much work)",
                l.work
            ),
            Exceeded::Deadline => format!(
                "{BUDGET_PREFIX}the run took longer than its deadline of {}",
                human_duration(l.deadline)
            ),
        }
    }
}

/// How every budget message starts (how the template layer tells a budget failure
/// from other evaluation errors).
pub const BUDGET_PREFIX: &str = "run budget exceeded: ";

/// `16 MiB`, `1.5 KiB`, `12 bytes`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, name) in UNITS {
        if n >= size {
            return if n.is_multiple_of(size) {
                format!("{} {name}", n / size)
            } else {
                format!("{:.1} {name}", n as f64 / size as f64)
            };
        }
    }
    format!("{n} bytes")
}

/// `30 s`, `250 ms`.
pub fn human_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Budget>>> = const { RefCell::new(None) };
}

/// Installs `budget` on this thread until the guard drops (nested installs of the same
/// budget cost nothing; the previous one comes back on drop).
pub(crate) fn install(budget: &Arc<Budget>) -> Installed {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_some_and(|b| Arc::ptr_eq(b, budget)) {
            return Installed {
                previous: None,
                swapped: false,
            };
        }
        Installed {
            previous: c.replace(budget.clone()),
            swapped: true,
        }
    })
}

/// Puts the previous budget back when dropped (see [`install`]).
pub(crate) struct Installed {
    previous: Option<Arc<Budget>>,
    swapped: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if self.swapped {
            let prev = self.previous.take();
            CURRENT.with(|c| *c.borrow_mut() = prev);
        }
    }
}

/// Charges bytes to the installed budget (`true` without one).
#[inline]
pub(crate) fn bytes(n: u64) -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_none_or(|b| b.charge_bytes(n)))
}

/// Charges work to the installed budget (`true` without one).
#[inline]
pub(crate) fn work(n: u64) -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_none_or(|b| b.charge_work(n)))
}

/// Charges both: `n` bytes built by copying (each copied byte is work too).
#[inline]
pub(crate) fn build(n: u64) -> bool {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .is_none_or(|b| b.charge_work(n) && b.charge_bytes(n))
    })
}

/// Bytes left in the installed budget (`u64::MAX` without one).
pub(crate) fn left() -> u64 {
    CURRENT.with(|c| c.borrow().as_ref().map_or(u64::MAX, |b| b.bytes_left()))
}

/// The installed budget's message when it is spent.
pub(crate) fn spent_message() -> Option<String> {
    CURRENT.with(|c| {
        let c = c.borrow();
        let b = c.as_ref()?;
        b.exceeded().map(|e| b.message(e))
    })
}

/// Whether the installed budget is spent.
#[inline]
pub(crate) fn is_spent() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(|b| b.exceeded().is_some()))
}
