/// Typed, validated configuration of dilated attention: groups of (segment length, dilation rate),
/// head offsets, causality and scale. Pure: no tensors, no native calls.
namespace LongNet

open System

/// A configuration error: the offending parameter and what range it must lie in.
type ConfigError =
    {
        Parameter: string
        Message: string
    }

    /// Raises the error as an `ArgumentException` (or `ArgumentOutOfRangeException`) naming the parameter.
    member e.Raise<'T>() : 'T =
        raise (ArgumentException(e.Message, e.Parameter))

/// Which local offset each head uses inside a segment of a group with dilation rate r.
type HeadOffsets =
    /// Head j uses offset j mod r (the LongNet paper).
    | Paper
    /// Head j uses offset j / ceil(H / r): contiguous blocks of heads (torchscale's checkpoints).
    | Blocks

/// Functions over head offsets.
module HeadOffsets =
    /// The offset s_j in [0, rate) of head `head` (of `heads`) for a group with dilation `rate`.
    let offset (mode: HeadOffsets) (heads: int) (rate: int) (head: int) : int =
        match mode with
        | Paper -> head % rate
        | Blocks -> head / ((heads + rate - 1) / rate)

    /// Parses "paper" or "blocks" (case-insensitive).
    let parse (text: string) : Result<HeadOffsets, ConfigError> =
        match text.Trim().ToLowerInvariant() with
        | "paper" -> Ok Paper
        | "blocks" -> Ok Blocks
        | _ ->
            Error
                {
                    Parameter = "offsets"
                    Message = $"offsets must be 'paper' or 'blocks', got '{text}'."
                }

/// One (segment length w, dilation rate r) group of dilated attention, with 1 ≤ r ≤ w.
[<Struct; CustomEquality; CustomComparison>]
type Group =
    private
        {
            W: int
            R: int
        }

    /// The segment length w.
    member g.SegmentLength = g.W
    /// The dilation rate r.
    member g.DilationRate = g.R

    /// Builds a group, checking 1 ≤ segmentLength and 1 ≤ dilationRate ≤ segmentLength.
    static member Create(segmentLength: int, dilationRate: int) : Result<Group, ConfigError> =
        if segmentLength < 1 then
            Error
                {
                    Parameter = "segmentLength"
                    Message = $"segmentLength must be ≥ 1, got {segmentLength}."
                }
        elif dilationRate < 1 || dilationRate > segmentLength then
            Error
                {
                    Parameter = "dilationRate"
                    Message = $"dilationRate must be in [1, segmentLength = {segmentLength}], got {dilationRate}."
                }
        else
            Ok { W = segmentLength; R = dilationRate }

    override g.ToString() = $"(w={g.W}, r={g.R})"

    override g.Equals(o) =
        match o with
        | :? Group as h -> g.W = h.W && g.R = h.R
        | _ -> false

    override g.GetHashCode() = HashCode.Combine(g.W, g.R)

    interface IComparable with
        member g.CompareTo(o) =
            match o with
            | :? Group as h -> compare (g.W, g.R) (h.W, h.R)
            | _ -> invalidArg "o" "can only compare with another Group"

/// Group lists: from (segment length, dilation rate) pairs, from a rule, and back.
module Groups =
    /// Groups from (segment length, dilation rate) pairs, checked one by one; the error names the first bad one.
    let ofPairs (pairs: (int * int) list) : Result<Group list, ConfigError> =
        List.foldBack
            (fun (w, r) acc ->
                match Group.Create(w, r), acc with
                | Ok g, Ok gs -> Ok(g :: gs)
                | Error e, _ -> Error e
                | _, Error e -> Error e)
            pairs
            (Ok [])

    /// Groups from pairs known to be valid (presets, literals); raises `ArgumentException` otherwise.
    let ofPairsOrRaise (pairs: (int * int) list) : Group list =
        match ofPairs pairs with
        | Ok groups -> groups
        | Error e -> e.Raise()

    /// The (segment length, dilation rate) pair of each group.
    let pairs (groups: Group list) : (int * int) list =
        groups |> List.map (fun g -> g.SegmentLength, g.DilationRate)

    /// Groups as text: "(1024,1) (2048,2)".
    let describe (groups: Group list) : string =
        String.Join(" ", groups |> List.map (fun g -> $"({g.SegmentLength},{g.DilationRate})"))

    /// The LongNet paper's geometric groups: segment w0·α^i with rate β^i for i = 0 … count−1 (count ≤ 16),
    /// every rate ≤ heads so that per-head offsets cover each (head, position) in every group.
    let geometric
        (firstSegment: int)
        (segmentRatio: int)
        (rateRatio: int)
        (count: int)
        (heads: int)
        : Result<Group list, ConfigError> =
        let error p m = Error { Parameter = p; Message = m }

        if firstSegment < 1 then
            error "firstSegment" $"firstSegment must be ≥ 1, got {firstSegment}."
        elif segmentRatio < 2 then
            error "segmentRatio" $"segmentRatio must be ≥ 2, got {segmentRatio}."
        elif rateRatio < 1 || rateRatio > segmentRatio then
            error "rateRatio" $"rateRatio must be in [1, segmentRatio = {segmentRatio}], got {rateRatio}."
        elif count < 1 || count > 16 then
            error "count" $"count must be in [1, 16], got {count}."
        elif heads < 1 then
            error "heads" $"heads must be ≥ 1, got {heads}."
        else
            let power (b: int) (e: int) = pown (int64 b) e
            let lastSegment = int64 firstSegment * power segmentRatio (count - 1)
            let lastRate = power rateRatio (count - 1)

            if lastSegment > int64 Int32.MaxValue then
                error "count" $"count {count} makes the last segment {lastSegment}, past {Int32.MaxValue}."
            elif lastRate > int64 heads then
                error
                    "count"
                    $"count {count} makes the last rate {lastRate}, above heads = {heads}: some (head, position) pairs would be covered by no head; use fewer groups, a smaller rateRatio or more heads."
            else
                List.init count (fun i ->
                    Group.Create(firstSegment * int (power segmentRatio i), int (power rateRatio i))
                    |> Result.defaultWith (fun e -> e.Raise()))
                |> Ok

/// How a distance bias grows with the distance δ ≥ 0 between a query and a key.
type BiasForm =
    /// −slope · δ (ALiBi, Press et al. 2022, arXiv 2108.12409).
    | LinearBias
    /// −slope · ln(1 + δ) (the logarithmic variant of KERPLE, Chi et al. 2022, arXiv 2205.09921).
    | LogarithmicBias

/// An additive attention bias that favours nearer keys: head h adds −slopeₕ · f(δ) to the score of a
/// key δ positions away (original positions, so the groups of dilated attention agree on it).
type DistanceBias =
    {
        /// How the bias grows with distance.
        Form: BiasForm
        /// One slope ≥ 0 per head.
        Slopes: float list
    }

/// Functions over distance biases.
module DistanceBias =
    /// The form's name in configuration files: "linear" or "log".
    let formName (form: BiasForm) : string =
        match form with
        | LinearBias -> "linear"
        | LogarithmicBias -> "log"

    /// Parses "linear" or "log" (case-insensitive).
    let parseForm (text: string) : Result<BiasForm, ConfigError> =
        match text.Trim().ToLowerInvariant() with
        | "linear" -> Ok LinearBias
        | "log" -> Ok LogarithmicBias
        | _ ->
            Error
                {
                    Parameter = "biasForm"
                    Message = $"biasForm must be \"linear\" or \"log\", got \"{text}\"."
                }

    /// `heads` slopes from `maxSlope` (head 0) down to `minSlope` (the last head), geometrically spaced,
    /// with 0 < minSlope ≤ maxSlope.
    let geometricSlopes (heads: int) (maxSlope: float) (minSlope: float) : Result<float list, ConfigError> =
        if heads < 1 then
            Error
                {
                    Parameter = "heads"
                    Message = $"heads must be ≥ 1, got {heads}."
                }
        elif not (Double.IsFinite maxSlope && maxSlope > 0.0) then
            Error
                {
                    Parameter = "biasMaxSlope"
                    Message = $"biasMaxSlope must be a finite number > 0, got {maxSlope}."
                }
        elif not (Double.IsFinite minSlope && minSlope > 0.0 && minSlope <= maxSlope) then
            Error
                {
                    Parameter = "biasMinSlope"
                    Message = $"biasMinSlope must be in (0, biasMaxSlope = {maxSlope}], got {minSlope}."
                }
        elif heads = 1 then
            Ok [ maxSlope ]
        else
            let ratio = minSlope / maxSlope

            Ok(List.init heads (fun h -> maxSlope * Math.Pow(ratio, float h / float (heads - 1))))

    /// Checks a bias: finite slopes ≥ 0, one per head when `heads` is given.
    let validate (heads: int option) (bias: DistanceBias) : Result<DistanceBias, ConfigError> =
        match bias.Slopes |> List.tryFind (fun s -> not (Double.IsFinite s && s >= 0.0)) with
        | Some s ->
            Error
                {
                    Parameter = "biasSlopes"
                    Message = $"biasSlopes must be finite numbers ≥ 0, got {s}."
                }
        | None ->
            match heads with
            | Some h when h <> bias.Slopes.Length ->
                Error
                    {
                        Parameter = "biasSlopes"
                        Message = $"biasSlopes must hold one slope per head ({h}), got {bias.Slopes.Length}."
                    }
            | _ when bias.Slopes.IsEmpty ->
                Error
                    {
                        Parameter = "biasSlopes"
                        Message = "biasSlopes must hold at least one slope."
                    }
            | _ -> Ok bias

/// The full configuration of dilated attention.
type DilatedConfig =
    {
        /// The (w, r) groups whose outputs are mixed; non-empty, no duplicates.
        Groups: Group list
        /// Which offset each head uses (paper: j mod r).
        Offsets: HeadOffsets
        /// Whether a query may only see keys at or before its own position.
        Causal: bool
        /// Softmax scale; `None` means 1/sqrt(headDim).
        Scale: float option
        /// An additive bias favouring nearer keys (one slope per head), or none.
        Bias: DistanceBias option
    }

/// Validating constructors for `DilatedConfig`.
module DilatedConfig =
    let private checkScale (scale: float option) : Result<unit, ConfigError> =
        match scale with
        | Some s when not (Double.IsFinite s) || s <= 0.0 ->
            Error
                {
                    Parameter = "scale"
                    Message = $"scale must be a finite number > 0, got {s}."
                }
        | _ -> Ok()

    /// Builds a configuration from groups: at least one, all distinct, and a finite scale > 0 if given.
    let ofGroups
        (groups: Group list)
        (offsets: HeadOffsets)
        (causal: bool)
        (scale: float option)
        : Result<DilatedConfig, ConfigError> =
        checkScale scale
        |> Result.bind (fun () ->
            if groups.IsEmpty then
                Error
                    {
                        Parameter = "groups"
                        Message = "groups must hold at least one group."
                    }
            else
                match groups |> List.countBy id |> List.tryFind (fun (_, n) -> n > 1) with
                | Some(g, _) ->
                    Error
                        {
                            Parameter = "groups"
                            Message = $"groups must be distinct; {g} appears more than once."
                        }
                | None ->
                    Ok
                        {
                            Groups = groups
                            Offsets = offsets
                            Causal = causal
                            Scale = scale
                            Bias = None
                        })

    /// Builds a configuration from parallel lists of segment lengths and dilation rates.
    let create
        (segmentLengths: int list)
        (dilationRates: int list)
        (offsets: HeadOffsets)
        (causal: bool)
        (scale: float option)
        : Result<DilatedConfig, ConfigError> =
        if segmentLengths.IsEmpty then
            Error
                {
                    Parameter = "segmentLengths"
                    Message = "segmentLengths must name at least one group."
                }
        elif segmentLengths.Length <> dilationRates.Length then
            Error
                {
                    Parameter = "dilationRates"
                    Message =
                        $"dilationRates must have one entry per segment length ({segmentLengths.Length}), got {dilationRates.Length}."
                }
        else
            // the same checks in the same order as before: scale, each group, then distinct groups,
            // a duplicate named after this function's own parameter
            checkScale scale
            |> Result.bind (fun () -> Groups.ofPairs (List.zip segmentLengths dilationRates))
            |> Result.bind (fun groups ->
                ofGroups groups offsets causal scale
                |> Result.mapError (fun e ->
                    if e.Parameter = "groups" then
                        { e with Parameter = "segmentLengths" }
                    else
                        e))

    /// Like `create`, but raises an `ArgumentException` naming the parameter on invalid input.
    let createOrRaise segmentLengths dilationRates offsets causal scale : DilatedConfig =
        match create segmentLengths dilationRates offsets causal scale with
        | Ok c -> c
        | Error e -> e.Raise()

    /// The configuration with a distance bias (checked: finite slopes ≥ 0).
    let withBias (bias: DistanceBias option) (config: DilatedConfig) : Result<DilatedConfig, ConfigError> =
        match bias with
        | None -> Ok { config with Bias = None }
        | Some b ->
            DistanceBias.validate None b
            |> Result.map (fun b -> { config with Bias = Some b })

    /// The scale actually used for a head dimension: the configured one or 1/sqrt(headDim).
    let scaleFor (config: DilatedConfig) (headDim: int) : float =
        config.Scale |> Option.defaultWith (fun () -> 1.0 / sqrt (float headDim))
