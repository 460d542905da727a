/// A small seeded random number generator whose whole state is one 64-bit integer (SplitMix64), so a
/// checkpoint can store and restore it exactly. Drives batch sampling, dropout seeds and generation.
namespace LongNet.Training

open System

/// SplitMix64 (Steele, Lea and Flood 2014). Not cryptographic; deterministic across platforms.
[<Sealed>]
type Rng(state: uint64) =
    let mutable state = state

    /// Creates a generator from a seed (any value).
    static member Create(seed: int64) = Rng(uint64 seed)

    /// The whole state: a generator built with `Rng(State)` continues the same sequence.
    member _.State = state

    /// The next 64 random bits.
    member _.NextUInt64() : uint64 =
        state <- state + 0x9E3779B97F4A7C15UL
        let mutable z = state
        z <- (z ^^^ (z >>> 30)) * 0xBF58476D1CE4E5B9UL
        z <- (z ^^^ (z >>> 27)) * 0x94D049BB133111EBUL
        z ^^^ (z >>> 31)

    /// A uniform integer in [0, bound) (bound ≥ 1), without modulo bias.
    member r.NextInt64(bound: int64) : int64 =
        if bound < 1L then
            invalidArg "bound" $"bound must be ≥ 1, got {bound}."

        let b = uint64 bound
        let limit = UInt64.MaxValue - UInt64.MaxValue % b
        let mutable x = r.NextUInt64()

        while x >= limit do
            x <- r.NextUInt64()

        int64 (x % b)

    /// A uniform double in [0, 1) with 53 random bits.
    member r.NextDouble() : float =
        float (r.NextUInt64() >>> 11) * (1.0 / 9007199254740992.0)

    /// A non-negative 63-bit seed, e.g. for `torch.manual_seed`.
    member r.NextSeed() : int64 = int64 (r.NextUInt64() >>> 1)
