/// Choosing the next token from logits: greedy (argmax), or sampling with temperature, top-k and top-p
/// (nucleus) filtering. Pure functions over float arrays, driven by a seeded `Rng`.
namespace LongNet.Training

open System

/// How the next token is chosen.
type SamplingSettings =
    {
        /// Always take the most likely token (the other fields are ignored).
        Greedy: bool
        /// Logits are divided by this (> 0) before the softmax.
        Temperature: float
        /// Keep only the k most likely tokens (0 = all).
        TopK: int
        /// Keep the smallest set of most likely tokens whose probability reaches p (1 = all).
        TopP: float
    }

/// Sampling functions.
module Sampling =
    /// Greedy decoding.
    let greedy =
        {
            Greedy = true
            Temperature = 1.0
            TopK = 0
            TopP = 1.0
        }

    /// Temperature 0.8, top-k 40, top-p 0.95.
    let defaults =
        {
            Greedy = false
            Temperature = 0.8
            TopK = 40
            TopP = 0.95
        }

    /// Checks temperature > 0, top-k ≥ 0 and top-p in (0, 1]; errors name the parameter.
    let validate (s: SamplingSettings) : Result<SamplingSettings, string> =
        if s.Greedy then
            Ok s
        elif not (s.Temperature > 0.0 && Double.IsFinite s.Temperature) then
            Error $"`temperature` must be a number > 0, got {s.Temperature}."
        elif s.TopK < 0 then
            Error $"`topK` must be ≥ 0 (0 = off), got {s.TopK}."
        elif not (s.TopP > 0.0 && s.TopP <= 1.0) then
            Error $"`topP` must be in (0, 1], got {s.TopP}."
        else
            Ok s

    /// The index of the largest logit (the first one on ties).
    let argmax (logits: float[]) : int =
        let mutable best = 0

        for i in 1 .. logits.Length - 1 do
            if logits.[i] > logits.[best] then
                best <- i

        best

    /// Indices ordered by decreasing logit (ties: lower index first).
    let private ranking (logits: float[]) =
        Array.init logits.Length id
        |> Array.sortWith (fun a b ->
            let c = compare logits.[b] logits.[a]
            if c <> 0 then c else compare a b)

    /// Logits with all but the k largest set to −∞ (k ≤ 0 or k ≥ length: unchanged).
    let topK (k: int) (logits: float[]) : float[] =
        if k <= 0 || k >= logits.Length then
            Array.copy logits
        else
            let keep = ranking logits |> Array.truncate k |> Set.ofArray

            logits
            |> Array.mapi (fun i x -> if keep.Contains i then x else Double.NegativeInfinity)

    /// Softmax of logits / temperature (in float64, stable).
    let softmax (temperature: float) (logits: float[]) : float[] =
        let scaled = logits |> Array.map (fun x -> x / temperature)
        let peak = Array.max scaled

        let e =
            scaled
            |> Array.map (fun x ->
                if Double.IsNegativeInfinity x then
                    0.0
                else
                    Math.Exp(x - peak))

        let total = Array.sum e
        e |> Array.map (fun x -> x / total)

    /// Logits with everything outside the nucleus set to −∞: the smallest set of most likely tokens
    /// whose probability (softmax of the logits) reaches p; the most likely token is always kept.
    let topP (p: float) (logits: float[]) : float[] =
        if p >= 1.0 then
            Array.copy logits
        else
            let probabilities = softmax 1.0 logits
            let order = ranking logits
            let keep = Collections.Generic.HashSet<int>()
            let mutable mass = 0.0
            let mutable i = 0

            while i < order.Length && (keep.Count = 0 || mass < p) do
                keep.Add order.[i] |> ignore
                mass <- mass + probabilities.[order.[i]]
                i <- i + 1

            logits
            |> Array.mapi (fun j x -> if keep.Contains j then x else Double.NegativeInfinity)

    /// Draws an index from probabilities (summing to 1) with one uniform number from `rng`.
    let draw (rng: Rng) (probabilities: float[]) : int =
        let u = rng.NextDouble()
        let mutable acc = 0.0
        let mutable chosen = -1
        let mutable i = 0

        while chosen < 0 && i < probabilities.Length do
            acc <- acc + probabilities.[i]

            if u < acc then
                chosen <- i

            i <- i + 1

        if chosen >= 0 then
            chosen
        else
            // rounding left u ≥ the total: take the last token with non-zero probability
            probabilities |> Array.findIndexBack (fun x -> x > 0.0)

    /// Chooses the next token: argmax when greedy; else temperature, then top-k, then top-p, then a draw.
    let next (settings: SamplingSettings) (rng: Rng) (logits: float[]) : int =
        if settings.Greedy then
            argmax logits
        else
            let filtered =
                logits
                |> Array.map (fun x -> x / settings.Temperature)
                |> topK settings.TopK
                |> topP settings.TopP

            draw rng (softmax 1.0 filtered)
