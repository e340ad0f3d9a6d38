//! What one local user may take of the control path: connections and
//! request memory ([`Quota`], held while in use), and changes a second
//! ([`ChangeRate`], spent). Callers with CAP_AUDIT_CONTROL or
//! CAP_SYS_ADMIN (runtimes, the hook, administrators) are not held to a
//! user's share, and have a reserve of the shared totals to themselves.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::bucket::{Rate, TokenBucket};

/// Whose share a caller uses: a user, and for uid 0 its container's PID
/// namespace too (`host::pidns::share_namespace`: the nearest PID
/// namespace a runtime made, not one of those the caller made in user
/// namespaces of its own), so that the roots of two containers without
/// user namespaces (uid 0 both, without capabilities) do not share one,
/// nor a container's root with the host's. Any other user can make as
/// many PID namespaces as it likes, so its share is its uid's wherever it
/// connects from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Holder {
    uid: u32,
    pid_ns: u64,
}

impl Holder {
    pub(super) fn of(uid: u32, pid_ns: u64) -> Holder {
        let pid_ns = if uid == 0 { pid_ns } else { 0 };
        Holder { uid, pid_ns }
    }
}

/// A resource shared by every caller (request bytes in memory, open
/// connections), limited per holder and in total. Privileged callers
/// may also use a reserve the others cannot touch, and no per-holder
/// limit applies to them: whatever local users do, a runtime or an
/// administrator is still served.
pub(super) struct Quota {
    held: Mutex<(u64, HashMap<Holder, u64>)>,
    total: u64,
    reserve: u64,
    per_holder: u64,
}

impl Quota {
    pub(super) fn new(total: u64, reserve: u64, per_holder: u64) -> Quota {
        Quota {
            held: Mutex::new((0, HashMap::new())),
            total,
            reserve,
            per_holder,
        }
    }

    /// Takes `n` for `holder`; `privileged` is asked only when the
    /// ordinary limits refuse.
    pub(super) fn take(&self, holder: Holder, n: u64, privileged: impl FnOnce() -> bool) -> bool {
        let mut held = self.held.lock().expect("the quota lock");
        let (total, by_holder) = &mut *held;
        let mine = by_holder.get(&holder).copied().unwrap_or(0);
        let ordinary = *total + n <= self.total - self.reserve && mine + n <= self.per_holder;
        if !(ordinary || *total + n <= self.total && privileged()) {
            return false;
        }
        *total += n;
        *by_holder.entry(holder).or_default() += n;
        true
    }

    pub(super) fn give_back(&self, holder: Holder, n: u64) {
        let mut held = self.held.lock().expect("the quota lock");
        let (total, by_holder) = &mut *held;
        *total -= n;
        if let Some(mine) = by_holder.get_mut(&holder) {
            *mine -= n;
            if *mine == 0 {
                by_holder.remove(&holder);
            }
        }
    }
}

/// What a holder has of a quota until this is dropped: the bytes of one
/// request until it is answered, or one connection.
pub(super) struct Charge<'a> {
    quota: &'a Quota,
    holder: Holder,
    amount: u64,
}

impl<'a> Charge<'a> {
    /// Nothing yet.
    pub(super) fn none(quota: &'a Quota, holder: Holder) -> Charge<'a> {
        Charge {
            quota,
            holder,
            amount: 0,
        }
    }

    /// `n` already taken with [`Quota::take`].
    pub(super) fn taken(quota: &'a Quota, holder: Holder, n: u64) -> Charge<'a> {
        Charge {
            quota,
            holder,
            amount: n,
        }
    }

    /// Takes `n` more; `privileged` is asked only when the ordinary limits
    /// refuse. Whether it was granted.
    pub(super) fn more(&mut self, n: u64, privileged: impl FnOnce() -> bool) -> bool {
        let granted = self.quota.take(self.holder, n, privileged);
        if granted {
            self.amount += n;
        }
        granted
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        self.quota.give_back(self.holder, self.amount);
    }
}

/// The changes a holder may ask for: `burst` at once, then `per_sec` a
/// second (a token bucket). Every change is recorded, so without it one
/// user's legitimate no-op writes, hundreds a second, would rotate the
/// whole trail away in minutes.
pub(super) struct ChangeRate {
    /// `None`: no limit.
    rate: Option<Rate>,
    buckets: Mutex<HashMap<Holder, TokenBucket>>,
}

/// Holders remembered before full buckets (those idle long enough to
/// have refilled) are forgotten.
const REMEMBERED: usize = 4096;

impl ChangeRate {
    /// `per_sec` 0: no limit.
    pub(super) fn new(per_sec: u32, burst: u32) -> ChangeRate {
        ChangeRate {
            rate: (per_sec > 0).then(|| Rate::new(burst.max(1), per_sec)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `holder` may ask for one more change at `now`.
    pub(super) fn allow(&self, holder: Holder, now: Instant) -> bool {
        let Some(rate) = self.rate else {
            return true;
        };
        let mut buckets = self.buckets.lock().expect("the change-rate lock");
        if buckets.len() >= REMEMBERED && !buckets.contains_key(&holder) {
            buckets.retain(|_, b| !b.is_full(rate, now));
        }
        buckets
            .entry(holder)
            .or_insert(TokenBucket::full(rate, now))
            .take(rate, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn user(uid: u32) -> Holder {
        Holder::of(uid, 1)
    }

    fn quota() -> Quota {
        Quota::new(100, 20, 50)
    }

    #[test]
    fn a_user_cannot_take_more_than_its_share_and_the_reserve_is_kept() {
        let b = quota();
        assert!(b.take(user(1000), 50, || false));
        assert!(!b.take(user(1000), 1, || false), "per-uid limit");
        assert!(b.take(user(1001), 30, || false));
        assert!(!b.take(user(1002), 1, || false), "only the reserve is left");
        assert!(
            b.take(user(0), 20, || true),
            "a privileged caller uses the reserve"
        );
        assert!(!b.take(user(0), 1, || true), "the total holds for everyone");
        b.give_back(user(1000), 50);
        assert!(b.take(user(1002), 30, || false));
        assert!(
            !b.take(user(1002), 1, || false),
            "the reserve is in use, not lent"
        );
    }

    #[test]
    fn privilege_is_asked_only_when_needed() {
        let b = quota();
        assert!(b.take(user(5), 10, || panic!("not needed")));
    }

    #[test]
    fn only_root_has_a_share_per_pid_namespace() {
        assert_ne!(Holder::of(0, 1), Holder::of(0, 2));
        assert_eq!(Holder::of(1000, 1), Holder::of(1000, 2));
        let b = quota();
        assert!(b.take(Holder::of(1000, 7), 50, || false));
        assert!(
            !b.take(Holder::of(1000, 8), 1, || false),
            "a PID namespace of its own gives a user no second share"
        );
        assert!(b.take(Holder::of(0, 8), 30, || false));
    }

    #[test]
    fn changes_come_in_a_burst_then_at_the_rate() {
        let rate = ChangeRate::new(10, 5);
        let t0 = Instant::now();
        let me = Holder::of(1000, 1);
        assert_eq!((0..20).filter(|_| rate.allow(me, t0)).count(), 5);
        assert!(rate.allow(Holder::of(1001, 1), t0), "another user's bucket");
        let later = t0 + Duration::from_millis(500);
        assert_eq!((0..20).filter(|_| rate.allow(me, later)).count(), 5);
        let much_later = later + Duration::from_secs(60);
        assert_eq!(
            (0..20).filter(|_| rate.allow(me, much_later)).count(),
            5,
            "no more than the burst is saved up"
        );
        let unlimited = ChangeRate::new(0, 5);
        assert!((0..1000).all(|_| unlimited.allow(me, t0)));
    }

    #[test]
    fn idle_holders_are_forgotten_when_many_are_remembered() {
        let rate = ChangeRate::new(1000, 2);
        let t0 = Instant::now();
        for uid in 0..REMEMBERED as u32 {
            assert!(rate.allow(Holder::of(uid + 1, 0), t0));
        }
        let later = t0 + Duration::from_secs(1);
        assert!(rate.allow(Holder::of(u32::MAX, 0), later));
        assert_eq!(rate.buckets.lock().unwrap().len(), 1);
    }
}
