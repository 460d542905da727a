/// Reading configuration records from JSON objects with defaults and errors that name the field.
/// Unknown fields are errors too, so a typo never silently falls back to a default.
module LongNet.JsonFields

open System
open System.Text.Json
open System.Text.Json.Nodes

/// Raised while reading a JSON configuration; carries the field and the message.
exception InvalidConfig of ConfigError

/// Raises `InvalidConfig` for `field` with `message`.
let fail (field: string) (message: string) : 'T =
    raise (InvalidConfig { Parameter = field; Message = message })

/// Runs a reader, turning `InvalidConfig` into `Error`.
let catch (read: unit -> 'T) : Result<'T, ConfigError> =
    try
        Ok(read ())
    with InvalidConfig e ->
        Error e

/// Reads the fields of one JSON object; `section` prefixes field names in messages (e.g. "model.heads").
[<Sealed>]
type Reader(node: JsonNode, section: string) =
    let obj =
        match node with
        | :? JsonObject as o -> o
        | null -> JsonObject()
        | _ -> fail section $"{section} must be a JSON object."

    let qualified name =
        if String.IsNullOrEmpty section then
            name
        else
            $"{section}.{name}"

    let tryValue (name: string) : JsonNode option =
        let mutable v: JsonNode = null

        if obj.TryGetPropertyValue(name, &v) && not (isNull v) then
            Some v
        else
            None

    let number (name: string) (v: JsonNode) : float =
        match v with
        | :? JsonValue as jv when jv.GetValueKind() = JsonValueKind.Number ->
            // parsed nodes hold a JsonElement, built ones a CLR number: read both through the text
            Double.Parse(jv.ToJsonString(), Globalization.CultureInfo.InvariantCulture)
        | _ -> fail (qualified name) $"{qualified name} must be a number, got {v.ToJsonString()}."

    /// An integer field in [lo, hi], or `fallback` when absent.
    member _.Int(name: string, fallback: int, lo: int, hi: int) : int =
        match tryValue name with
        | None -> fallback
        | Some v ->
            let x = number name v

            if Math.Floor x <> x || x < float lo || x > float hi then
                fail (qualified name) $"{qualified name} must be an integer in [{lo}, {hi}], got {v.ToJsonString()}."
            else
                int x

    /// A number field satisfying `ok` (described by `range`), or `fallback` when absent.
    member _.Float(name: string, fallback: float, ok: float -> bool, range: string) : float =
        match tryValue name with
        | None -> fallback
        | Some v ->
            let x = number name v

            if Double.IsFinite x && ok x then
                x
            else
                fail (qualified name) $"{qualified name} must be {range}, got {v.ToJsonString()}."

    /// A boolean field, or `fallback` when absent.
    member _.Bool(name: string, fallback: bool) : bool =
        match tryValue name with
        | None -> fallback
        | Some v ->
            match v.GetValueKind() with
            | JsonValueKind.True -> true
            | JsonValueKind.False -> false
            | _ -> fail (qualified name) $"{qualified name} must be true or false, got {v.ToJsonString()}."

    /// A string field, or `fallback` when absent.
    member _.String(name: string, fallback: string) : string =
        match tryValue name with
        | None -> fallback
        | Some v ->
            match v.GetValueKind() with
            | JsonValueKind.String -> v.GetValue<string>()
            | _ -> fail (qualified name) $"{qualified name} must be a string, got {v.ToJsonString()}."

    /// A list of integers each in [lo, hi], or `fallback` when absent.
    member _.IntList(name: string, fallback: int list, lo: int, hi: int) : int list =
        match tryValue name with
        | None -> fallback
        | Some(:? JsonArray as items) ->
            [
                for item in items do
                    let x = if isNull item then nan else number name item

                    if Math.Floor x <> x || x < float lo || x > float hi then
                        fail
                            (qualified name)
                            $"{qualified name} must hold integers in [{lo}, {hi}], got {items.ToJsonString()}."

                    int x
            ]
        | Some v -> fail (qualified name) $"{qualified name} must be a list of integers, got {v.ToJsonString()}."

    /// A list of strings, or `None` when the field is absent.
    member _.StringList(name: string) : string list option =
        match tryValue name with
        | None -> None
        | Some(:? JsonArray as items) ->
            Some
                [
                    for item in items do
                        match item with
                        | :? JsonValue as v when v.GetValueKind() = JsonValueKind.String -> v.GetValue<string>()
                        | _ -> fail (qualified name) $"{qualified name} must hold strings, got {items.ToJsonString()}."
                ]
        | Some v -> fail (qualified name) $"{qualified name} must be a list of strings, got {v.ToJsonString()}."

    /// A list of JSON objects, or `None` when the field is absent.
    member _.ObjectList(name: string) : JsonNode list option =
        match tryValue name with
        | None -> None
        | Some(:? JsonArray as items) ->
            Some
                [
                    for i in 0 .. items.Count - 1 do
                        match items.[i] with
                        | :? JsonObject as o -> o :> JsonNode
                        | item ->
                            let text = if isNull item then "null" else item.ToJsonString()
                            fail $"{qualified name}[{i}]" $"{qualified name}[{i}] must be a JSON object, got {text}."
                ]
        | Some v -> fail (qualified name) $"{qualified name} must be a list of objects, got {v.ToJsonString()}."

    /// Whether the object holds the field `name`.
    member _.Has(name: string) : bool = (tryValue name).IsSome

    /// A nested object field (absent: an empty object).
    member _.Object(name: string) : JsonNode =
        match tryValue name with
        | None -> JsonObject()
        | Some(:? JsonObject as o) -> o
        | Some v -> fail (qualified name) $"{qualified name} must be a JSON object, got {v.ToJsonString()}."

    /// Fails when the object holds a field not in `known`.
    member _.RejectUnknown(known: string list) : unit =
        for KeyValue(name, _) in obj do
            if not (List.contains name known) then
                let list = String.Join(", ", known)
                fail (qualified name) $"unknown field '{qualified name}'; known fields: {list}."

/// Parses JSON text into a node, failing with the position of a syntax error.
let parse (what: string) (text: string) : JsonNode =
    try
        match
            JsonNode.Parse(
                text,
                documentOptions =
                    JsonDocumentOptions(CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true)
            )
        with
        | null -> fail what $"{what} is empty; expected a JSON object."
        | node -> node
    with :? JsonException as e ->
        fail what $"{what} is not valid JSON: {e.Message}"

/// Indented JSON text of a node.
let write (node: JsonNode) : string =
    node.ToJsonString(JsonSerializerOptions(WriteIndented = true))
