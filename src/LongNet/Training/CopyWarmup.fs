/// Teaching a small language model to copy — the mechanism long context is used through ("find where
/// the current token occurred before and predict what followed it"), which text alone teaches a small
/// model too slowly. Two parts: copy problems of random tokens before the text (copying starts there),
/// and a warm-up stream that inserts random spans into the text and repeats them later (copying is kept,
/// and reaches further, while the model learns the text). Held-out text is never altered.
namespace LongNet.Training

/// What a token of the warm-up stream is.
type StreamPart =
    /// A token of the training text, in order.
    | Text = 0uy
    /// A token of an inserted random span (its first occurrence).
    | Span = 1uy
    /// A token of a repeated random span.
    | Copy = 2uy

/// Copy problems and the warm-up stream.
module CopyWarmup =
    /// Shortest chunk of text between insertions, in tokens.
    let minChunk = 32

    /// Longest chunk of text between insertions, in tokens.
    let maxChunk = 256

    /// Shortest random span, in tokens.
    let minSpan = 16

    /// Longest random span, in tokens.
    let maxSpan = 64

    /// Random spans use token ids below this (or below the vocabulary size, if smaller): few enough
    /// that every id is seen often, so copying, not the ids, is what is learnt.
    let spanIdLimit = 512

    /// Tokens per copy problem (the model reads this many and predicts each next one).
    let problemLength = 128

    /// Copy problems per optimizer step.
    let problemsPerStep = 8

    /// The shortest training window a warm-up stream fits: a span, its repeat and a chunk between.
    let minWindow = maxChunk + 2 * maxSpan

    /// The reach for windows of `windowLength` tokens: every span and its repeat fit one window.
    let reachFor (windowLength: int) =
        max (maxChunk + maxSpan) (windowLength - maxSpan)

    /// The ids random spans draw from for a vocabulary of `vocabSize` ids: below `spanIdLimit`, leaving
    /// out the top three ids, where this library's tokenizers keep their special ids.
    let spanIds (vocabSize: int) = max 2 (min spanIdLimit (vocabSize - 3))

    /// One copy problem of `problemLength + 1` random token ids below `ids` in which `problemLength / 2`
    /// consecutive tokens each equal the token d back, d in 16 … `problemLength / 2` (so about half of
    /// the targets are copies). Deterministic in `rng`.
    let copyProblem (rng: Rng) (ids: int) : int[] =
        if ids < 2 then
            invalidArg "ids" $"ids must be ≥ 2, got {ids}."

        let tokens =
            Array.init (problemLength + 1) (fun _ -> int (rng.NextInt64(int64 ids)))

        let span = problemLength / 2
        let distance = minSpan + int (rng.NextInt64(int64 (span - minSpan + 1)))
        let start = int (rng.NextInt64(int64 (problemLength + 1 - distance - span + 1)))

        for i in 0 .. span - 1 do
            tokens.[start + distance + i] <- tokens.[start + i]

        tokens

    /// `tokens` cut into chunks of 32 … 256 tokens; after each chunk, with probability `share`, a span of
    /// 16 … 64 random ids below `ids`, repeated once at a distance between its length and `reach`
    /// (log-uniform; a repeat due inside a chunk follows that chunk, and one delayed past `reach` is
    /// dropped). Returns the stream and what each of its tokens is. Deterministic in `seed`.
    let streamWithParts (seed: int64) (share: float) (reach: int) (ids: int) (tokens: int[]) : int[] * StreamPart[] =
        if not (share >= 0.0 && share < 1.0) then
            invalidArg "share" $"share must be in [0, 1), got {share}."

        if reach < maxChunk + maxSpan then
            invalidArg "reach" $"reach must be ≥ {maxChunk + maxSpan}, got {reach}."

        if ids < 2 then
            invalidArg "ids" $"ids must be ≥ 2, got {ids}."

        let rng = Rng.Create seed
        let out = ResizeArray<int>(int (float tokens.Length * (1.0 + share)) + maxChunk)
        let parts = ResizeArray<StreamPart>(out.Capacity)
        // repeats waiting for their position: (start of the span, its length), by the position due
        let pending = System.Collections.Generic.PriorityQueue<int * int, int>()

        let emit (part: StreamPart) (xs: int[]) =
            out.AddRange xs

            for _ in 1 .. xs.Length do
                parts.Add part

        let emitDue () =
            let mutable next = (0, 0)
            let mutable due = 0

            while pending.TryPeek(&next, &due) && due <= out.Count do
                let start, length = pending.Dequeue()

                if out.Count - start <= reach then
                    emit StreamPart.Copy (out.GetRange(start, length).ToArray())

        let longest = float (reach - maxChunk)
        let mutable i = 0

        while i < tokens.Length do
            let length =
                min (tokens.Length - i) (minChunk + int (rng.NextInt64(int64 (maxChunk - minChunk + 1))))

            emit StreamPart.Text (Array.sub tokens i length)
            i <- i + length
            emitDue ()

            if rng.NextDouble() < share then
                let span = minSpan + int (rng.NextInt64(int64 (maxSpan - minSpan + 1)))
                let start = out.Count
                emit StreamPart.Span (Array.init span (fun _ -> int (rng.NextInt64(int64 ids))))

                let distance =
                    int (exp (log (float span) + rng.NextDouble() * (log longest - log (float span))))

                pending.Enqueue((start, span), start + max span distance)

        // repeats still pending at the end of the text are dropped
        out.ToArray(), parts.ToArray()

    /// The warm-up stream alone (`streamWithParts` without the parts).
    let stream (seed: int64) (share: float) (reach: int) (ids: int) (tokens: int[]) : int[] =
        fst (streamWithParts seed share reach ids tokens)
