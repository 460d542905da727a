/// Fuzzing the `longnet` command line in-process, through the CLI's entry point `Program.main`: random
/// commands with random mixtures of known options, good and bad values, unknown options, stray words,
/// repeated and value-less options, `--help`, missing and damaged `.npy` inputs. Property: exit code 0, 1
/// or 2; exit 2 prints `error: …` naming an option (or the unknown command or word); exit 1 prints one
/// error line; no stack trace; a successful `attend` writes a finite output of the input's shape. Commands
/// that would train or benchmark for minutes always get a missing corpus/checkpoint or a bad option, so
/// every case ends in seconds (a watchdog fails a case that runs past two minutes).
module LongNet.Proofs.CliFuzz

open System
open System.IO
open System.Threading.Tasks
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open LongNet

/// The kind of value an option takes (each kind has good and bad spellings).
type ValueKind =
    | Count
    | SmallCount
    | Number
    | Numbers
    | Fractions
    | OffsetsName
    | PresetName
    | SplitName
    | MissingFile
    | OutputPath
    | Text
    | Npy of string

/// One element of a generated command line.
type Piece =
    | Option of name: string * value: string
    | Switch of string
    | Noise of string

/// One generated command line: the command word and its pieces.
type CliCase =
    {
        Command: string
        Pieces: Piece list
        /// Shapes `[b, n, h, d]` of the q, k, v files of `attend`, and whether they are float64.
        NpyShapes: int64[] list
        Float64: bool
        Seed: int
    }

let private valueGen (kind: ValueKind) : Gen<string> =
    match kind with
    | Count ->
        Gen.frequency
            [
                4, Gen.choose (1, 64) |> Gen.map string
                1, Gen.elements [ "0"; "-1"; "99999999999999999999"; "1_0"; "abc"; ""; "1.5"; " 3"; "٣" ]
            ]
    | SmallCount ->
        Gen.frequency
            [
                4, Gen.choose (1, 300) |> Gen.map string
                1, Gen.elements [ "0"; "-5"; "x"; ""; "1e3" ]
            ]
    | Number -> Gen.elements [ "0.5"; "1"; "2.25"; "0"; "-1"; "NaN"; "inf"; "-Infinity"; "1e309"; "x"; "" ]
    | Numbers ->
        Gen.frequency
            [
                4,
                Gen.listOfLength 2 (Gen.choose (1, 32))
                |> Gen.map (List.distinct >> List.map string >> String.concat ",")
                1, Gen.elements [ "8,,16"; ","; "a,b"; "0,1"; "-3"; ""; "4, 8"; "2147483648" ]
            ]
    | Fractions -> Gen.elements [ "0,0.5,1"; "0.25"; "1.5"; "-0.1"; "NaN"; "x"; "" ]
    | OffsetsName -> Gen.elements [ "paper"; "blocks"; "Paper"; "diagonal"; "" ]
    | PresetName -> Gen.elements [ "tiny"; "demo"; "small"; "huge"; "" ]
    | SplitName -> Gen.elements [ "validation"; "train"; "test" ]
    | MissingFile -> Gen.elements [ "missing.txt"; "missing/run/checkpoint.ckpt"; "" ]
    | OutputPath -> Gen.elements [ "out"; "deep/er/out"; "out.json" ]
    | Text -> Gen.elements [ "The sky"; ""; "ü"; "--" ]
    | Npy _ -> Gen.elements [ "q.npy"; "k.npy"; "v.npy"; "bad.npy"; "absent.npy"; "short.npy" ]

/// Each command's options (name, value kind) and switches, as its help documents them.
let private vocabulary: (string * (string * ValueKind) list * string list) list =
    [
        "plan",
        [
            "--segments", Numbers
            "--rates", Numbers
            "--offsets", OffsetsName
            "--scale", Number
            "--n", SmallCount
            "--heads", SmallCount
            "--head-dim", Count
        ],
        [ "--causal"; "--no-diameter" ]
        "attend",
        [
            "--q", Npy "q"
            "--k", Npy "k"
            "--v", Npy "v"
            "--segments", Numbers
            "--rates", Numbers
            "--offsets", OffsetsName
            "--scale", Number
            "--out", OutputPath
        ],
        [ "--causal"; "--check-inputs" ]
        "train",
        [
            "--corpus", MissingFile
            "--config", MissingFile
            "--preset", PresetName
            "--out", OutputPath
            "--steps", Count
            "--seq-len", Count
            "--seed", Count
        ],
        [ "--resume" ]
        "eval",
        [
            "--checkpoint", MissingFile
            "--corpus", MissingFile
            "--lengths", Numbers
            "--json", OutputPath
            "--max-tokens", Count
            "--split", SplitName
            "--context", Numbers
            "--targets", Count
            "--windows", Count
            "--window", Count
            "--long", Count
        ],
        [ "--by-position" ]
        "generate",
        [
            "--checkpoint", MissingFile
            "--prompt", Text
            "--prompt-file", MissingFile
            "--max-new-tokens", Count
            "--temperature", Number
            "--top-k", Count
            "--top-p", Number
            "--seed", Count
        ],
        [ "--greedy" ]
        "demo",
        [
            "--out", OutputPath
            "--minutes", Number
            "--corpus", MissingFile
            "--seed", Count
            "--base", MissingFile
            "--long", Count
            "--windows", Count
        ],
        [ "--from-scratch" ]
        "context-study",
        [
            "--out", OutputPath
            "--minutes", Number
            "--corpus", MissingFile
            "--seed", Count
            "--windows", Count
            "--base", MissingFile
        ],
        [ "--from-base" ]
        "passkey",
        [
            "--checkpoint", MissingFile
            "--lengths", Numbers
            "--depths", Fractions
            "--trials", Count
            "--seed", Count
            "--json", OutputPath
            "--heatmap", OutputPath
        ],
        []
        "bench",
        [
            "--n", Numbers
            "--segments", Numbers
            "--rates", Numbers
            "--repeats", Count
        ],
        []
        "attention-demo", [ "--n", SmallCount; "--seed", Count ], []
    ]

/// Options that must be present (with a missing file or a bad spelling) so the command cannot run long.
let private forced: Map<string, Piece list> =
    Map
        [
            "train", [ Option("--corpus", "missing.txt"); Option("--out", "out") ]
            "demo", [ Option("--corpus", "missing.txt"); Option("--out", "out") ]
            "context-study", [ Option("--corpus", "missing.txt"); Option("--out", "out") ]
            "eval", [ Option("--checkpoint", "missing.ckpt") ]
            "generate", [ Option("--checkpoint", "missing.ckpt") ]
            "passkey", [ Option("--checkpoint", "missing.ckpt") ]
            "bench", [ Noise "--definitely-not-an-option" ]
            "attention-demo", [ Option("--n", "8") ]
        ]

let private noiseGen =
    Gen.elements [ "--bogus"; "word"; "-x"; ""; "--"; "--help"; "ünï"; "--n=3"; "-h" ]

let cliCaseGen: Gen<CliCase> =
    gen {
        let! command, options, switches =
            Gen.frequency
                [
                    for (name, _, _) as entry in vocabulary do
                        (match name with
                         | "attend" -> 6
                         | "plan" -> 5
                         | "attention-demo" -> 1
                         | _ -> 2),
                        Gen.constant entry
                ]

        let! count = Gen.choose (0, options.Length + 2)

        let! chosen =
            Gen.listOfLength count (Gen.elements options)
            |> Gen.map (fun picked ->
                // mostly one of each option; sometimes a repeat
                picked |> List.distinctBy fst)

        let! repeat = Gen.frequency [ 9, Gen.constant false; 1, Gen.constant true ]

        let! pieces =
            chosen
            |> List.map (fun (name, kind) -> valueGen kind |> Gen.map (fun v -> Option(name, v)))
            |> Gen.sequenceToList

        let! switchPieces = Gen.subListOf switches |> Gen.map (List.ofSeq >> List.map Switch)

        let! noise =
            Gen.frequency [ 3, Gen.constant []; 1, noiseGen |> Gen.map (fun n -> [ Noise n ]) ]

        let! dropValue = Gen.frequency [ 9, Gen.constant false; 1, Gen.constant true ]
        let! shuffled = Gen.shuffle (pieces @ switchPieces @ noise)

        let pieces =
            let own = List.ofArray shuffled

            let own =
                if repeat && not own.IsEmpty then
                    own @ [ List.head own ]
                else
                    own

            let missingForced =
                forced.TryFind command
                |> Option.defaultValue []
                |> List.filter (fun p ->
                    match p with
                    | Option(name, _) ->
                        not (
                            own
                            |> List.exists (fun o ->
                                o = p
                                || (match o with
                                    | Option(n, _) -> n = name
                                    | _ -> false))
                        )
                    | _ -> true)

            let all = own @ missingForced

            if dropValue then
                match List.tryLast all with
                | Some(Option(name, _)) -> List.take (all.Length - 1) all @ [ Noise name ]
                | _ -> all
            else
                all

        let! b = Gen.choose (1, 2)
        let! n = Gen.choose (1, 20)
        let! h = Gen.choose (1, 3)
        let! d = Gen.choose (1, 4)
        let! longerKey = Gen.frequency [ 6, Gen.constant false; 1, Gen.constant true ]
        let! float64 = Gen.elements [ false; true ]
        let! seed = Gen.choose (0, Int32.MaxValue)
        let shape = [| int64 b; int64 n; int64 h; int64 d |]

        let keyShape =
            if longerKey then
                [| int64 b; int64 (n + 1); int64 h; int64 d |]
            else
                shape

        return
            {
                Command = command
                Pieces = pieces
                NpyShapes = [ shape; keyShape; shape ]
                Float64 = float64
                Seed = seed
            }
    }

/// The argument list: file names resolved inside `dir`.
let private arguments (dir: string) (c: CliCase) : string list =
    let resolve (name: string) (value: string) =
        match name with
        | "--q"
        | "--k"
        | "--v"
        | "--out"
        | "--json"
        | "--heatmap"
        | "--corpus"
        | "--config"
        | "--checkpoint"
        | "--prompt-file" when value <> "" -> Path.Combine(dir, value)
        | _ -> value

    c.Command
    :: [
        for p in c.Pieces do
            match p with
            | Option(name, value) ->
                name
                resolve name value
            | Switch name -> name
            | Noise word -> word
    ]

/// Writes the q, k, v files of `attend` (plus a corrupt and a truncated one) into `dir`.
let private writeInputs (dir: string) (c: CliCase) =
    use scope = torch.NewDisposeScope()
    use generator = new torch.Generator(uint64 c.Seed)
    let dtype = if c.Float64 then torch.float64 else torch.float32

    for name, shape in List.zip [ "q"; "k"; "v" ] c.NpyShapes do
        Npy.writeTensor (Path.Combine(dir, $"{name}.npy")) (torch.randn (shape, dtype = dtype, generator = generator))

    File.WriteAllText(Path.Combine(dir, "bad.npy"), "not an npy file")
    let q = File.ReadAllBytes(Path.Combine(dir, "q.npy"))
    File.WriteAllBytes(Path.Combine(dir, "short.npy"), q.[.. q.Length - 3])

let private consoleLock = obj ()

/// Runs `Program.main` with the console captured: (exit code, stdout, stderr); None if it ran past two minutes.
let runCli (args: string list) : (int * string * string) option =
    lock consoleLock (fun () ->
        use out = new StringWriter()
        use err = new StringWriter()
        let oldOut, oldErr = Console.Out, Console.Error
        Console.SetOut out
        Console.SetError err

        try
            let run = Task.Run(fun () -> LongNet.Cli.Program.main (Array.ofList args))

            if run.Wait(TimeSpan.FromMinutes 2.0) then
                Some(run.Result, out.ToString(), err.ToString())
            else
                None
        finally
            Console.SetOut oldOut
            Console.SetError oldErr)

/// Runs one command line and checks the exit code, stderr and (for a successful attend) the output file.
let checkCli (c: CliCase) : unit =
    let dir = Path.Combine(Path.GetTempPath(), $"longnet-clifuzz-{Guid.NewGuid():N}")
    Directory.CreateDirectory dir |> ignore

    try
        writeInputs dir c
        let args = arguments dir c
        let shown = String.Join(" ", args |> List.map (fun a -> if a = "" then "''" else a))

        match runCli args with
        | None -> failwith $"`longnet {shown}` ran for more than two minutes"
        | Some(code, stdout, stderr) ->
            let fail (why: string) =
                failwith $"`longnet {shown}` → exit {code}: {why}\nstdout: {stdout}\nstderr: {stderr}"

            if stderr.Contains "   at " then
                fail "a stack trace on stderr"

            let errorLines =
                stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                |> Array.filter (fun l -> l.StartsWith "error: " || l.StartsWith "failed: ")

            let asksHelp = args |> List.exists (fun a -> a = "--help" || a = "-h")

            match code with
            | 0 when asksHelp ->
                if stdout.Length = 0 then
                    fail "--help printed nothing"
            | 0 when c.Command = "attend" ->
                let outPath = args |> List.skipWhile ((<>) "--out") |> List.tail |> List.head
                use scope = torch.NewDisposeScope()
                let out = Npy.readTensor outPath

                let q =
                    Npy.readTensor (args |> List.skipWhile ((<>) "--q") |> List.tail |> List.head)

                if out.shape <> q.shape || not (out.isfinite().all().item<bool>()) then
                    fail $"the output has shape {out.shape} (input {q.shape}) or is not finite"
            | 0 when c.Command = "plan" ->
                if not (stdout.Contains "pairs") then
                    fail "plan printed no pairs"
            | 0 when c.Command = "attention-demo" -> ()
            | 0 -> fail "a command that should have stopped at a missing file or bad option succeeded"
            | 2 ->
                if errorLines.Length <> 1 || not (stderr.StartsWith "error: ") then
                    fail "exit 2 must print exactly one `error: …` line first"

                let line = errorLines.[0]

                if
                    not (
                        line.Contains "--"
                        || line.Contains "unknown command"
                        || line.Contains "unexpected argument"
                    )
                then
                    fail "the usage error names no option"
            | 1 ->
                if errorLines.Length <> 1 then
                    fail "exit 1 must print exactly one `error: …` line"
            | other -> fail $"exit code {other} is not 0, 1 or 2"
    finally
        try
            Directory.Delete(dir, true)
        with _ ->
            ()

/// The CLI fuzz property (a quarter of the main count).
let tests =
    testPropertyWithConfig
        (Cases.config (Cases.share 0.25 40))
        "fuzz: random `longnet` command lines exit 0, 1 or 2 with one error line naming the problem"
        (Prop.forAll (Arb.fromGen cliCaseGen) (Cases.counted "command lines" checkCli))
