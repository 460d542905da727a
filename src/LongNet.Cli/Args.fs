/// A small, strict command-line parser: `--name value` options and `--flag` switches, with errors
/// that name the option and the allowed values (exit code 2).
module LongNet.Cli.Args

open System
open System.Globalization

/// Bad command-line input: reported on stderr with exit code 2.
exception UsageError of string

/// Parsed options of one command: values by option name (without dashes) and the switches given.
type Parsed =
    {
        Values: Map<string, string>
        Switches: Set<string>
    }

/// Parses `argv` given the option names that take a value and the switch names; rejects anything else.
let parse (valueOptions: string list) (switches: string list) (argv: string list) : Parsed =
    let rec go (values: Map<string, string>) (flags: Set<string>) args =
        match args with
        | [] -> { Values = values; Switches = flags }
        | (a: string) :: rest when a.StartsWith "--" ->
            let name = a.Substring 2

            if List.contains name switches then
                go values (flags.Add name) rest
            elif List.contains name valueOptions then
                match rest with
                | v :: rest' when not (v.StartsWith "--" && v.Length > 2 && Char.IsLetter v.[2]) ->
                    if values.ContainsKey name then
                        raise (UsageError $"--{name} is given twice.")

                    go (values.Add(name, v)) flags rest'
                | _ -> raise (UsageError $"--{name} needs a value.")
            else
                let known =
                    (valueOptions @ switches) |> List.map (sprintf "--%s") |> String.concat ", "

                raise (UsageError $"unknown option {a}; this command takes: {known}.")
        | a :: _ -> raise (UsageError $"unexpected argument '{a}'; options start with --.")

    go Map.empty Set.empty argv

/// The value of a required option.
let required (p: Parsed) (name: string) : string =
    match p.Values.TryFind name with
    | Some v -> v
    | None -> raise (UsageError $"--{name} is required.")

/// The value of an optional option.
let optional (p: Parsed) (name: string) : string option = p.Values.TryFind name

/// Whether a switch was given.
let has (p: Parsed) (name: string) : bool = p.Switches.Contains name

/// Parses an integer option value within [lo, hi].
let toInt (name: string) (lo: int64) (hi: int64) (text: string) : int64 =
    match Int64.TryParse(text.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture) with
    | true, v when v >= lo && v <= hi -> v
    | true, v -> raise (UsageError $"--{name} must be in [{lo}, {hi}], got {v}.")
    | _ -> raise (UsageError $"--{name} must be an integer, got '{text}'.")

/// Parses a float option value that must be finite and > 0 (when `positive`).
let toFloat (name: string) (positive: bool) (text: string) : float =
    match Double.TryParse(text.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture) with
    | true, v when Double.IsFinite v && (not positive || v > 0.0) -> v
    | true, v ->
        let bound = if positive then " > 0" else ""
        raise (UsageError $"--{name} must be a finite number{bound}, got {v}.")
    | _ -> raise (UsageError $"--{name} must be a number, got '{text}'.")

/// Parses a comma-separated list of integers, each within [lo, hi].
let toIntList (name: string) (lo: int64) (hi: int64) (text: string) : int64 list =
    let parts = text.Split(',', StringSplitOptions.TrimEntries)

    if parts |> Array.exists String.IsNullOrEmpty then
        raise (UsageError $"--{name} must be a comma-separated list of integers, got '{text}'.")

    parts |> Array.map (toInt name lo hi) |> List.ofArray
