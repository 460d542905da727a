/// A strict `--name value` command-line parser: every option must be known, values are required where
/// declared, repeated options and stray words are errors. Problems raise `UsageError` (exit code 2).
/// Option names are written with their dashes, e.g. `required p "--corpus"`.
module LongNet.Cli.Args

open System
open System.Globalization

/// A problem with the command line; the message names the option.
exception UsageError of string

/// The options found on a command line.
type Parsed =
    {
        /// Options that take a value, by name ("--steps" → "100").
        Values: Map<string, string>
        /// Switches present (e.g. "--resume").
        Switches: Set<string>
    }

let private normalise (name: string) =
    if name.StartsWith "--" then name else "--" + name

/// Parses `argv` given the names of options that take a value and of switches.
let parse (valueOptions: string list) (switches: string list) (argv: string list) : Parsed =
    let valueOptions = valueOptions |> List.map normalise |> Set.ofList
    let switches = switches |> List.map normalise |> Set.ofList

    let rec go (values: Map<string, string>) (seen: Set<string>) (args: string list) =
        match args with
        | [] -> { Values = values; Switches = seen }
        | name :: rest when valueOptions.Contains name ->
            if values.ContainsKey name then
                raise (UsageError $"{name} is given more than once.")

            match rest with
            | value :: rest when
                not (
                    value.StartsWith "--"
                    && (valueOptions.Contains value || switches.Contains value)
                )
                ->
                go (values.Add(name, value)) seen rest
            | _ -> raise (UsageError $"{name} needs a value.")
        | name :: rest when switches.Contains name ->
            if seen.Contains name then
                raise (UsageError $"{name} is given more than once.")

            go values (seen.Add name) rest
        | word :: _ when word.StartsWith "-" ->
            let known = String.Join(", ", Seq.append valueOptions switches |> Seq.sort)
            raise (UsageError $"unknown option {word}; known options: {known}.")
        | word :: _ -> raise (UsageError $"unexpected argument '{word}'; options are written --name value.")

    go Map.empty Set.empty argv

/// The value of a required option.
let required (p: Parsed) (name: string) : string =
    match p.Values.TryFind(normalise name) with
    | Some v -> v
    | None -> raise (UsageError $"{normalise name} is required.")

/// The value of an optional option.
let optional (p: Parsed) (name: string) : string option = p.Values.TryFind(normalise name)

/// Whether a switch is present.
let has (p: Parsed) (name: string) : bool = p.Switches.Contains(normalise name)

/// An integer option value in [lo, hi].
let toInt (name: string) (lo: int64) (hi: int64) (text: string) : int64 =
    match Int64.TryParse(text.Replace("_", ""), NumberStyles.Integer, CultureInfo.InvariantCulture) with
    | true, v when v >= lo && v <= hi -> v
    | _ -> raise (UsageError $"{normalise name} must be an integer in [{lo}, {hi}], got '{text}'.")

/// A finite number option value (> 0 when `positive`).
let toFloat (name: string) (positive: bool) (text: string) : float =
    match Double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture) with
    | true, v when Double.IsFinite v && (not positive || v > 0.0) -> v
    | _ ->
        let what = if positive then "a number > 0" else "a number"
        raise (UsageError $"{normalise name} must be {what}, got '{text}'.")

/// A comma-separated list of integers, each in [lo, hi].
let toIntList (name: string) (lo: int64) (hi: int64) (text: string) : int64 list =
    let items = text.Split(',', StringSplitOptions.TrimEntries)

    if items |> Array.exists String.IsNullOrEmpty then
        raise (UsageError $"{normalise name} must be a comma-separated list of integers, got '{text}'.")

    items |> Array.map (toInt name lo hi) |> List.ofArray

/// The integer value of an optional option in [lo, hi], or `fallback` when it is absent.
let intOption (p: Parsed) (name: string) (lo: int64) (hi: int64) (fallback: int64) : int64 =
    optional p name |> Option.map (toInt name lo hi) |> Option.defaultValue fallback
