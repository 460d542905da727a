/// The documentation stays honest: every test it cites by name exists in the test sources.
module LongNet.Tests.DocsTests

open System
open System.IO
open System.Text.RegularExpressions
open Xunit

/// The repository root: the nearest folder above the test binaries holding LongNet.sln.
let repositoryRoot () =
    let rec up (dir: DirectoryInfo) =
        if isNull dir then
            failwith "LongNet.sln not found above the test binaries"
        elif File.Exists(Path.Combine(dir.FullName, "LongNet.sln")) then
            dir.FullName
        else
            up dir.Parent

    up (DirectoryInfo AppContext.BaseDirectory)

/// Test names cited in a markdown text: backticked names inside brackets, [`a`, `b`].
let citedTestNames (markdown: string) : string list =
    [
        for citation in Regex.Matches(markdown, @"\[(`[^`\]]+`(?:,\s*`[^`\]]+`)*)\]") do
            for name in Regex.Matches(citation.Groups.[1].Value, @"`([^`]+)`") do
                yield name.Groups.[1].Value
    ]

[<Fact>]
let ``citations are read from brackets only`` () =
    let text = "a [`first test`, `second one`] b `not cited` c [`third`]"
    Assert.Equal<string list>([ "first test"; "second one"; "third" ], citedTestNames text)

[<Fact>]
let ``every test named in brackets in the docs exists`` () =
    let root = repositoryRoot ()

    let sources =
        Directory.EnumerateFiles(Path.Combine(root, "tests"), "*.fs", SearchOption.AllDirectories)
        |> Seq.filter (fun f -> not (f.Contains $"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}"))
        |> Seq.map File.ReadAllText
        |> String.concat "\n"

    let docs =
        Directory.EnumerateFiles(Path.Combine(root, "docs"), "*.md", SearchOption.AllDirectories)
        |> Seq.append [ Path.Combine(root, "README.md") ]
        |> Seq.toList

    let cited =
        [
            for doc in docs do
                for name in citedTestNames (File.ReadAllText doc) -> Path.GetFileName doc, name
        ]

    Assert.True(cited.Length >= 20, $"expected the docs to cite at least 20 tests, found {cited.Length}")

    let missing =
        cited |> List.filter (fun (_, name) -> not (sources.Contains $"``{name}``"))

    Assert.True(missing.IsEmpty, sprintf "tests cited in the docs but not found: %A" missing)

[<Fact>]
let ``the CLI reference shows every command's current help text`` () =
    let reference =
        File.ReadAllText(Path.Combine(repositoryRoot (), "docs", "cli.md")).Replace("\r\n", "\n")

    let code, usage, _ = TestSupport.longnet [ "--help" ]
    Assert.Equal(0, code)
    Assert.Contains(usage.Replace("\r\n", "\n").Trim(), reference)

    let commands =
        usage.Split('\n')
        |> Array.skipWhile (fun l -> not (l.StartsWith "commands:"))
        |> Array.skip 1
        |> Array.takeWhile (fun l -> l.StartsWith "  ")
        |> Array.map (fun l -> l.Trim().Split(' ').[0])

    Assert.True(commands.Length >= 10, $"expected at least 10 commands, found {commands.Length}")

    for command in commands do
        let code, help, _ = TestSupport.longnet [ command; "--help" ]
        Assert.Equal(0, code)
        let help = help.Replace("\r\n", "\n").Trim()

        Assert.True(
            reference.Contains $"## `{command}`" && reference.Contains help,
            $"docs/cli.md lacks the current `longnet {command} --help` text; regenerate it (see the page's header)"
        )

/// String literals of F# source with comments removed: the text a user can see in a message.
let stringLiterals (source: string) : string list =
    let code =
        source.Split('\n')
        |> Array.filter (fun line -> not (line.TrimStart().StartsWith "//"))
        |> String.concat "\n"

    [ for m in Regex.Matches(code, "\"(?:[^\"\\\\\\n]|\\\\.)*\"") -> m.Value ]

[<Fact>]
let ``string literals are found outside comments only`` () =
    let source =
        "/// see --steps\nlet a = \"must be --x\" // --y\nlet b = $\"`steps` {x}\""

    Assert.Equal<string list>([ "\"must be --x\""; "\"`steps` {x}\"" ], stringLiterals source)

[<Fact>]
let ``the library's messages name parameters, never command-line flags`` () =
    let root = repositoryRoot ()

    let literals =
        [
            for project in [ "LongNet"; "LongNet.Experiments" ] do
                for file in
                    Directory.EnumerateFiles(Path.Combine(root, "src", project), "*.fs", SearchOption.AllDirectories) do
                    for literal in stringLiterals (File.ReadAllText file) -> Path.GetFileName file, literal
        ]

    Assert.True(
        literals.Length > 500,
        $"expected the library to hold over 500 string literals, found {literals.Length}"
    )

    let flagged =
        literals
        |> List.filter (fun (_, literal) -> Regex.IsMatch(literal, @"(?<![\w-])--[a-z]"))

    Assert.True(flagged.IsEmpty, sprintf "flag text in library strings: %A" flagged)

[<Fact>]
let ``the shipped demo base checkpoint holds the longctx preset's model`` () =
    LongNet.Native.ensureLoaded () |> ignore

    let path =
        Path.Combine(repositoryRoot (), "src", "LongNet.Experiments", "demo-base.ckpt")

    Assert.True(File.Exists path, $"no base checkpoint at {path}")

    match LongNet.Training.Checkpoint.load path with
    | Error e -> failwith e
    | Ok loaded ->
        for KeyValue(_, t) in loaded.Tensors do
            t.Dispose()

        let preset =
            { LongNet.Training.RunConfig.longContext.Model with
                VocabSize = loaded.Header.Model.VocabSize
            }

        Assert.Empty(LongNet.Modules.ModelConfig.differences preset loaded.Header.Model)
