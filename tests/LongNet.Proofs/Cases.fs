/// How many cases the fuzz properties run: `LONGNET_PROOF_CASES` (the long-run switch of
/// tests/run.sh) sets the count of the main attention property; the other properties run fixed shares.
module LongNet.Proofs.Cases

open System
open System.Collections.Concurrent
open Expecto

/// The environment variable that sets the main fuzz property's case count.
[<Literal>]
let Variable = "LONGNET_PROOF_CASES"

/// The main property's count when the variable is unset: small, so that CI's run stays quick.
[<Literal>]
let DefaultCount = 200

/// The main fuzz property's case count: `LONGNET_PROOF_CASES` (an integer in [1, 10000000]) or 200.
let count: int =
    match Environment.GetEnvironmentVariable Variable with
    | null
    | "" -> DefaultCount
    | text ->
        match Int32.TryParse text with
        | true, n when n >= 1 && n <= 10_000_000 -> n
        | _ -> failwith $"{Variable} must be an integer in [1, 10000000], got '{text}'."

/// `fraction` of the main count, at least `minimum`.
let share (fraction: float) (minimum: int) : int =
    max minimum (int (float count * fraction))

/// Whether the long run was asked for (a count above the default).
let isLongRun: bool = count > DefaultCount

/// An FsCheck configuration that runs `cases` cases with sizes growing up to 100.
let config (cases: int) : FsCheckConfig =
    { FsCheckConfig.defaultConfig with
        maxTest = cases
        endSize = 100
    }

let private tally = ConcurrentDictionary<string, int>()

/// `check` that also counts its calls under `name` (the count of cases actually run).
let counted (name: string) (check: 'T -> unit) : 'T -> unit =
    fun case ->
        tally.AddOrUpdate(name, 1, (fun _ n -> n + 1)) |> ignore
        check case

/// The number of cases each counted property ran, one line each, and the total.
let report () : string =
    let lines =
        tally |> Seq.sortBy _.Key |> Seq.map (fun kv -> $"  {kv.Key}: {kv.Value} cases")

    let total = tally.Values |> Seq.sum
    String.Join("\n", Seq.append lines [ $"  fuzz cases in all: {total}" ])
