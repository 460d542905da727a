/// Passkey retrieval prompts (the CASM paper's evaluation): filler sentences repeated to a target length in
/// tokens, a pass-key sentence inserted at a depth in [0, 1], and a closing question; scoring is the
/// exact match of the digits the model generates.
namespace LongNet.Text

open System

/// One passkey prompt.
type PasskeyPrompt =
    {
        /// The prompt text (decoded from `Tokens`).
        Text: string
        /// The prompt's token ids; exactly the target length.
        Tokens: int[]
        /// The digits to retrieve.
        Passkey: string
        /// The requested depth in [0, 1].
        Depth: float
        /// The token index where the pass-key sentence starts.
        NeedleStart: int
    }

/// Building and scoring passkey prompts.
module Passkey =
    /// The filler sentences, repeated (each followed by a space).
    let fillerSentences =
        [|
            "The grass is green."
            "The sky is blue."
            "The sun is yellow."
            "Here we go."
            "There and back again."
        |]

    /// The pass-key sentence for `passkey`, with a trailing space.
    let needle (passkey: string) : string =
        $"The pass key is {passkey}. Remember it. {passkey} is the pass key. "

    /// The closing question the model continues.
    let question = "What is the pass key? The pass key is"

    /// The fewest tokens a prompt for `passkey` can have: the pass-key sentence plus the question.
    let frameLength (tokenizer: ITokenizer) (passkey: string) : int =
        (tokenizer.Encode(needle passkey)).Length + (tokenizer.Encode question).Length

    /// A random 5-digit pass key (10000 … 99999) from `rng`.
    let randomPasskey (rng: Random) : string = string (rng.Next(10000, 100000))

    /// A prompt of exactly `targetLength` tokens whose filler starts `phase` tokens into the repeating
    /// filler text (0 = at its first sentence), with the pass-key sentence at the filler sentence boundary
    /// nearest below depth·(filler tokens) (0 = first, 1 = just before the question). The filler is cut at
    /// the token where the budget ends. Raises ArgumentOutOfRangeException naming `depth`, `targetLength`
    /// or `phase`.
    let buildAtPhase
        (tokenizer: ITokenizer)
        (targetLength: int)
        (depth: float)
        (passkey: string)
        (phase: int)
        : PasskeyPrompt =
        if String.IsNullOrEmpty passkey || not (passkey |> Seq.forall Char.IsAsciiDigit) then
            invalidArg "passkey" $"passkey must be a non-empty string of digits, got '{passkey}'."

        if not (depth >= 0.0 && depth <= 1.0) then
            raise (ArgumentOutOfRangeException("depth", box depth, $"depth must be in [0, 1], got {depth}."))

        if phase < 0 then
            raise (ArgumentOutOfRangeException("phase", box phase, $"phase must be ≥ 0, got {phase}."))

        let frame = frameLength tokenizer passkey

        if targetLength < frame then
            raise (
                ArgumentOutOfRangeException(
                    "targetLength",
                    box targetLength,
                    $"targetLength must be ≥ {frame} (the pass-key sentence and the question), got {targetLength}."
                )
            )

        let budget = targetLength - frame
        let sentences = fillerSentences |> Array.map (fun s -> tokenizer.Encode(s + " "))
        let cycle = Array.concat sentences
        let phase = phase % cycle.Length // the filler repeats, and phase + k stays far from overflow
        // the cycle offsets where a sentence starts
        let starts =
            sentences
            |> Array.scan (fun at s -> at + s.Length) 0
            |> Array.truncate sentences.Length
            |> set

        let filler = Array.init budget (fun k -> cycle.[(phase + k) % cycle.Length])

        let boundaries =
            [
                yield 0
                for k in 1 .. budget - 1 do
                    if starts.Contains((phase + k) % cycle.Length) then
                        yield k
                yield budget
            ]

        let wanted = int (Math.Floor(depth * float budget))
        let at = boundaries |> Seq.filter (fun b -> b <= wanted) |> Seq.max

        let tokens =
            Array.concat
                [
                    filler.[.. at - 1]
                    tokenizer.Encode(needle passkey)
                    filler.[at..]
                    tokenizer.Encode question
                ]

        {
            Text = tokenizer.Decode tokens
            Tokens = tokens
            Passkey = passkey
            Depth = depth
            NeedleStart = at
        }

    /// A prompt of exactly `targetLength` tokens with the pass-key sentence at the filler sentence boundary
    /// nearest below depth·(filler tokens) (0 = first, 1 = just before the question). The filler is cut at
    /// the token where the budget ends. Raises ArgumentOutOfRangeException naming `depth` or `targetLength`.
    let build (tokenizer: ITokenizer) (targetLength: int) (depth: float) (passkey: string) : PasskeyPrompt =
        buildAtPhase tokenizer targetLength depth passkey 0

    /// The digits a model generated: the first run of ASCII digits after optional whitespace ("" if none).
    let extractDigits (generated: string) : string =
        generated.TrimStart()
        |> Seq.takeWhile Char.IsAsciiDigit
        |> Seq.toArray
        |> String

    /// Exact match: the generated digits equal the pass key.
    let score (passkey: string) (generated: string) : bool = extractDigits generated = passkey

    /// The answer that follows a prompt in training samples: " NNNNN." as tokens.
    let answer (tokenizer: ITokenizer) (passkey: string) : int[] = tokenizer.Encode($" {passkey}.")

    /// The fewest tokens a training sample can have: a 5-digit key's frame plus its answer.
    let minimumSampleLength (tokenizer: ITokenizer) : int =
        frameLength tokenizer "00000" + (answer tokenizer "00000").Length

    /// A training sample of exactly `length` tokens: a prompt with a random 5-digit pass key at a random
    /// depth, its filler starting at a random point of the filler text (all from `rng`, so the key lands
    /// on many token positions), followed by its answer — next-token training on it teaches retrieval.
    /// Raises ArgumentOutOfRangeException naming `length` when it is below `minimumSampleLength`.
    let trainingSample (tokenizer: ITokenizer) (length: int) (rng: Random) : int[] =
        let minimum = minimumSampleLength tokenizer

        if length < minimum then
            raise (
                ArgumentOutOfRangeException(
                    "length",
                    box length,
                    $"a passkey training sample needs length ≥ {minimum} tokens, got {length}."
                )
            )

        let key = randomPasskey rng
        // NextDouble is < 1: depth 1 (the key right before the question, as evaluated) gets its own share
        let depth = if rng.Next 8 = 0 then 1.0 else rng.NextDouble()
        let answer = answer tokenizer key
        let phase = rng.Next(0, 1 <<< 20)
        let prompt = buildAtPhase tokenizer (length - answer.Length) depth key phase
        Array.append prompt.Tokens answer

    /// The corpus of a passkey training run (`TrainTask.PasskeySamples`): no training text, since every
    /// step generates its own samples, and 32 samples of `seqLen` + 1 tokens from a fixed seed as validation text.
    let corpus (tokenizer: ITokenizer) (seqLen: int) : Corpus =
        let rng = Random(20_241_005)

        let validation =
            Array.init 32 (fun _ -> trainingSample tokenizer (seqLen + 1) rng)
            |> Array.concat

        {
            Description = "generated passkey samples"
            Documents = 32
            Characters = int64 validation.Length
            Train = [||]
            Validation = validation
        }
