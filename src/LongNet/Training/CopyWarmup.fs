/// A copy warm-up for language-model training: the training stream with some of its own chunks
/// repeated a little later, so that early windows reward copying what followed an earlier occurrence of
/// the current text (the mechanism long context is used through). Held-out text is never altered.
namespace LongNet.Training

/// Building the repeated stream.
module CopyWarmup =
    /// Shortest chunk, in tokens.
    let minChunk = 32

    /// Longest chunk, in tokens.
    let maxChunk = 256

    /// `tokens` cut into chunks of 32 … 256 tokens; after each chunk, with probability `share`, a copy
    /// of a chunk that starts at most `reach` tokens back in the output (the chunk just written
    /// included). Deterministic in `seed`; the output is about (1 + share) times as long.
    let stream (seed: int64) (share: float) (reach: int) (tokens: int[]) : int[] =
        if not (share >= 0.0 && share < 1.0) then
            invalidArg "share" $"share must be in [0, 1), got {share}."

        if reach < maxChunk then
            invalidArg "reach" $"reach must be ≥ {maxChunk}, got {reach}."

        let rng = Rng.Create seed
        let out = ResizeArray<int>(int (float tokens.Length * (1.0 + share)) + maxChunk)
        let chunks = ResizeArray<int * int>()
        let mutable oldest = 0
        let mutable i = 0

        while i < tokens.Length do
            let length =
                min (tokens.Length - i) (minChunk + int (rng.NextInt64(int64 (maxChunk - minChunk + 1))))

            chunks.Add((out.Count, length))

            for j in i .. i + length - 1 do
                out.Add tokens.[j]

            i <- i + length

            if rng.NextDouble() < share then
                while out.Count - fst chunks.[oldest] > reach do
                    oldest <- oldest + 1

                let start, count =
                    chunks.[oldest + int (rng.NextInt64(int64 (chunks.Count - oldest)))]

                out.AddRange(out.GetRange(start, count).ToArray())

        out.ToArray()
