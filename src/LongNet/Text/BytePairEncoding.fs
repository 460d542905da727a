/// Byte-level byte-pair encoding of LongNet's own: a deterministic trainer that learns merges from text,
/// and the tokenizer they define. Ids 0 … 255 are UTF-8 bytes, id 256 + i is the i-th merge, and the
/// last id is `<eos>`, the document separator. Text is first cut into chunks (a letter run, a digit
/// run, a punctuation run, each with at most one leading space; whitespace runs), and merges never
/// cross a chunk, so encoding is a pure function of each chunk and is cached per chunk.
namespace LongNet.Text

open System
open System.Collections.Generic
open System.Text
open System.Text.RegularExpressions

/// A learnt byte-level BPE vocabulary: the ordered merges (pairs of ids; merge i creates id 256 + i).
type BpeMerges =
    {
        /// The merges in the order they were learnt (lower index = applied first).
        Merges: (int * int)[]
    }

    /// The number of ids: 256 bytes, one per merge, and `<eos>`.
    member this.VocabSize = 257 + this.Merges.Length

    /// The id of `<eos>`, the document separator.
    member this.EndOfText = 256 + this.Merges.Length

/// Learning and checking byte-level BPE merges.
module BytePairEncoding =
    /// Chunks of text that merges never cross: contractions, a letter run, a digit run or a run of other
    /// symbols (each with one optional leading space), or a whitespace run.
    let chunkPattern =
        Regex(
            @"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
            RegexOptions.Compiled ||| RegexOptions.CultureInvariant
        )

    /// The largest vocabulary the trainer builds (ids must fit comfortably in an embedding table).
    let maxVocabSize = 65536

    /// The smallest vocabulary: the 256 bytes, `<eos>` and at least one merge.
    let minVocabSize = 258

    /// Checks that every merge names ids that exist before it; the error names the first bad merge.
    let validate (merges: (int * int)[]) : Result<BpeMerges, string> =
        if merges.Length + 257 > maxVocabSize then
            Error $"a BPE vocabulary holds at most {maxVocabSize - 257} merges, got {merges.Length}."
        else
            merges
            |> Array.indexed
            |> Array.tryFind (fun (i, (a, b)) -> a < 0 || b < 0 || a >= 256 + i || b >= 256 + i)
            |> function
                | Some(i, (a, b)) ->
                    Error $"BPE merge {i} ({a}, {b}) names an id that is not defined before it (allowed 0 … {255 + i})."
                | None -> Ok { Merges = merges }

    let private pairKey (a: int) (b: int) = (int64 a <<< 32) ||| int64 (uint32 b)

    /// Learns merges from `texts` until the vocabulary holds `vocabSize` ids or no pair occurs twice.
    /// Deterministic: ties go to the pair with the smaller ids.
    let train (vocabSize: int) (texts: seq<string>) : BpeMerges =
        if vocabSize < minVocabSize || vocabSize > maxVocabSize then
            invalidArg "vocabSize" $"vocabSize must be in [{minVocabSize}, {maxVocabSize}], got {vocabSize}."

        let chunkCounts = Dictionary<string, int64>(StringComparer.Ordinal)

        for text in texts do
            for m in chunkPattern.Matches text do
                let key = m.Value

                match chunkCounts.TryGetValue key with
                | true, n -> chunkCounts.[key] <- n + 1L
                | _ -> chunkCounts.[key] <- 1L

        let chunks =
            chunkCounts
            |> Seq.sortWith (fun a b -> String.CompareOrdinal(a.Key, b.Key))
            |> Array.ofSeq

        let words =
            chunks
            |> Array.map (fun kv -> Encoding.UTF8.GetBytes kv.Key |> Array.map int |> ResizeArray)

        let counts = chunks |> Array.map _.Value
        let pairCounts = Dictionary<int64, int64>()
        let pairWords = Dictionary<int64, HashSet<int>>()

        let add (w: int) (a: int) (b: int) (n: int64) =
            let key = pairKey a b

            match pairCounts.TryGetValue key with
            | true, c -> pairCounts.[key] <- c + n
            | _ -> pairCounts.[key] <- n

            if n > 0L then
                match pairWords.TryGetValue key with
                | true, set -> set.Add w |> ignore
                | _ -> pairWords.[key] <- HashSet [ w ]

        for w in 0 .. words.Length - 1 do
            let word = words.[w]

            for i in 0 .. word.Count - 2 do
                add w word.[i] word.[i + 1] counts.[w]

        let merges = ResizeArray<int * int>()
        let target = vocabSize - 257
        let mutable finished = false

        while not finished && merges.Count < target do
            let mutable best = 0L
            let mutable bestCount = 1L

            for kv in pairCounts do
                if
                    kv.Value > bestCount
                    || (kv.Value = bestCount && bestCount > 1L && kv.Key < best)
                then
                    best <- kv.Key
                    bestCount <- kv.Value

            if bestCount < 2L then
                finished <- true
            else
                let a, b = int (best >>> 32), int (best &&& 0xFFFFFFFFL)
                let created = 256 + merges.Count
                merges.Add((a, b))

                for w in pairWords.[best] |> Seq.sort |> Array.ofSeq do
                    let word = words.[w]
                    let n = counts.[w]

                    for i in 0 .. word.Count - 2 do
                        add w word.[i] word.[i + 1] -n

                    let merged = ResizeArray<int>(word.Count)
                    let mutable i = 0

                    while i < word.Count do
                        if i < word.Count - 1 && word.[i] = a && word.[i + 1] = b then
                            merged.Add created
                            i <- i + 2
                        else
                            merged.Add word.[i]
                            i <- i + 1

                    words.[w] <- merged

                    for i in 0 .. merged.Count - 2 do
                        add w merged.[i] merged.[i + 1] n

                pairCounts.Remove best |> ignore
                pairWords.Remove best |> ignore

        { Merges = merges.ToArray() }

    /// The merges as text, one "a b" pair of ids per line (the form a vocabulary file stores).
    let toText (merges: BpeMerges) : string =
        let sb = StringBuilder()

        for a, b in merges.Merges do
            sb.Append(a).Append(' ').Append(b).Append('\n') |> ignore

        sb.ToString()

    /// Reads merges written by `toText`; the error names the first malformed line.
    let ofText (text: string) : Result<BpeMerges, string> =
        let lines =
            text.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            |> Array.map _.Trim()
            |> Array.filter (fun l -> l.Length > 0 && not (l.StartsWith "#"))

        let parsed =
            lines
            |> Array.mapi (fun i line ->
                match line.Split ' ' with
                | [| a; b |] ->
                    match Int32.TryParse a, Int32.TryParse b with
                    | (true, a), (true, b) -> Ok(a, b)
                    | _ -> Error $"BPE merges line {i + 1} ('{line}') must hold two integer ids."
                | _ -> Error $"BPE merges line {i + 1} ('{line}') must hold two integer ids.")

        match
            parsed
            |> Array.tryPick (function
                | Error e -> Some e
                | Ok _ -> None)
        with
        | Some e -> Error e
        | None ->
            parsed
            |> Array.map (function
                | Ok p -> p
                | Error _ -> (0, 0))
            |> validate
