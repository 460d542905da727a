/// Training text: reading a file or folder, the default corpus that every .NET SDK carries (the
/// reference assemblies' XML documentation), tokenizing, and a deterministic train/validation split.
namespace LongNet.Text

open System
open System.IO
open System.Text
open System.Text.RegularExpressions
open System.Xml

/// A tokenized corpus split into training and validation tokens.
type Corpus =
    {
        /// Where the text came from, for reports.
        Description: string
        /// The number of documents read.
        Documents: int
        /// The number of characters read.
        Characters: int64
        /// Training token ids (documents joined by the tokenizer's end-of-text id, if any).
        Train: int[]
        /// Validation token ids (held-out documents, or the tail of a single long text).
        Validation: int[]
    }

/// Reading and splitting corpora.
module Corpus =
    /// Every `validationStride`-th document goes to validation (5%) when there are enough documents.
    let validationStride = 20

    /// The share of tokens held out from the end when there are too few documents to split by document.
    let validationTail = 0.1

    /// One reference-documentation file in this many is held out (`isHeldOutFile`): about 2 M held-out
    /// tokens, enough for one 1,048,576-token window of unseen text.
    let referenceHeldOutShare = 3

    let private looksBinary (bytes: byte[]) =
        let probe = min bytes.Length 8192
        Array.IndexOf(bytes, 0uy, 0, probe) >= 0

    /// Reads a text file or every text file under a folder (recursively, in ordinal path order;
    /// files holding NUL bytes are skipped) as a list of documents, one per file.
    let readDocuments (path: string) : Result<string list, string> =
        let readFile (file: string) =
            let bytes = File.ReadAllBytes file

            if looksBinary bytes then
                None
            else
                Some(Encoding.UTF8.GetString bytes)

        try
            if File.Exists path then
                match readFile path with
                | Some text -> Ok [ text ]
                | None -> Error $"corpus '{path}' is a binary file; give a UTF-8 text file or a folder of them."
            elif Directory.Exists path then
                let files =
                    Directory.GetFiles(path, "*", SearchOption.AllDirectories)
                    |> Array.sortWith (fun a b -> String.CompareOrdinal(a, b))

                Ok(
                    files
                    |> Array.choose readFile
                    |> Array.filter (fun t -> t.Length > 0)
                    |> List.ofArray
                )
            else
                Error $"corpus '{path}' does not exist; give a UTF-8 text file or a folder of text files."
        with
        | :? UnauthorizedAccessException
        | :? IOException as e -> Error $"corpus '{path}' cannot be read: {e.Message}"

    let private qualified =
        Regex(@"(?:[A-Za-z_][\w`]*\.)+([A-Za-z_][\w`]*)", RegexOptions.Compiled)

    /// A readable short form of an XML-doc member id: "M:System.Text.StringBuilder.Append(System.Char)"
    /// → "StringBuilder.Append(Char)".
    let shortMemberName (id: string) : string =
        let body = if id.Length > 2 && id.[1] = ':' then id.Substring 2 else id
        let paren = body.IndexOf '('

        let name, args =
            if paren < 0 then
                body, ""
            else
                body.Substring(0, paren), body.Substring paren

        let parts = name.Split '.'
        let keep = if id.StartsWith "T:" || parts.Length < 2 then 1 else 2
        let name = String.Join(".", parts |> Array.skip (max 0 (parts.Length - keep)))
        name + qualified.Replace(args, "$1")

    let private whitespace = Regex(@"\s+", RegexOptions.Compiled)

    /// The documentation text of an XML documentation file: one document per `<member>` with its short
    /// name, summary, parameters, return value, remarks and exceptions as plain text.
    let xmlDocumentation (path: string) : string list =
        let settings =
            XmlReaderSettings(DtdProcessing = DtdProcessing.Ignore, IgnoreComments = true)

        use reader = XmlReader.Create(path, settings)
        let documents = ResizeArray<string>()
        let current = StringBuilder()
        let line = StringBuilder()
        let mutable inMember = false

        let flushLine () =
            let text = whitespace.Replace(line.ToString(), " ").Trim()

            if text.Length > 0 then
                current.Append(text).Append('\n') |> ignore

            line.Clear() |> ignore

        let crefText (cref: string) =
            if String.IsNullOrEmpty cref then
                ""
            else
                shortMemberName cref

        while reader.Read() do
            match reader.NodeType with
            | XmlNodeType.Element ->
                match reader.Name with
                | "member" ->
                    inMember <- true
                    current.Clear() |> ignore
                    line.Clear() |> ignore

                    current.Append(shortMemberName (reader.GetAttribute "name")).Append('\n')
                    |> ignore
                | "summary"
                | "remarks" -> flushLine ()
                | "param"
                | "typeparam" when inMember ->
                    flushLine ()
                    line.Append(reader.GetAttribute "name").Append(": ") |> ignore
                | "returns" when inMember ->
                    flushLine ()
                    line.Append("Returns: ") |> ignore
                | "exception" when inMember ->
                    flushLine ()

                    line.Append("Throws ").Append(crefText (reader.GetAttribute "cref")).Append(": ")
                    |> ignore
                | "see"
                | "seealso" when inMember ->
                    let text =
                        match reader.GetAttribute "langword" with
                        | null -> crefText (reader.GetAttribute "cref")
                        | word -> word

                    line.Append(' ').Append(text).Append(' ') |> ignore
                | "paramref"
                | "typeparamref" when inMember ->
                    line.Append(' ').Append(reader.GetAttribute "name").Append(' ') |> ignore
                | "para"
                | "p" when inMember -> line.Append(' ') |> ignore
                | _ -> ()
            | XmlNodeType.Text
            | XmlNodeType.CDATA
            | XmlNodeType.SignificantWhitespace
            | XmlNodeType.Whitespace when inMember -> line.Append(reader.Value) |> ignore
            | XmlNodeType.EndElement when reader.Name = "member" ->
                flushLine ()
                inMember <- false
                let text = current.ToString()

                // keep members that say something beyond their name
                if text.IndexOf('\n') < text.Length - 1 then
                    documents.Add text
            | XmlNodeType.EndElement ->
                match reader.Name with
                | "summary"
                | "remarks"
                | "param"
                | "typeparam"
                | "returns"
                | "exception" -> flushLine ()
                | _ -> ()
            | _ -> ()

        List.ofSeq documents

    /// The .NET installation folders to search: DOTNET_ROOT, the running runtime's root, and the
    /// folder of the `dotnet` found on PATH (links resolved).
    let dotnetRoots () : string list =
        let fromEnv =
            match Environment.GetEnvironmentVariable "DOTNET_ROOT" with
            | null
            | "" -> []
            | d -> [ d ]

        let fromRuntime =
            // …/shared/Microsoft.NETCore.App/<version>/ → …
            let dir = Runtime.InteropServices.RuntimeEnvironment.GetRuntimeDirectory()

            try
                [ Path.GetFullPath(Path.Combine(dir, "..", "..", "..")) ]
            with _ ->
                []

        let fromPath =
            match Environment.GetEnvironmentVariable "PATH" with
            | null -> []
            | path ->
                path.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
                |> Array.map (fun d -> Path.Combine(d, "dotnet"))
                |> Array.filter File.Exists
                |> Array.map (fun f ->
                    let info = FileInfo f

                    match info.ResolveLinkTarget true with
                    | null -> Path.GetDirectoryName f
                    | target -> Path.GetDirectoryName target.FullName)
                |> List.ofArray

        fromEnv @ fromRuntime @ fromPath |> List.distinct

    /// The folders holding the XML documentation of a reference pack's assemblies
    /// (`packs/<pack>/<version>/ref/net<x>/`), newest version first.
    let packDocFolders (pack: string) : string list =
        dotnetRoots ()
        |> List.collect (fun root ->
            let packs = Path.Combine(root, "packs", pack)

            if Directory.Exists packs then
                [
                    for versionDir in Directory.GetDirectories packs do
                        let refDir = Path.Combine(versionDir, "ref")

                        if Directory.Exists refDir then
                            for tfm in Directory.GetDirectories refDir do
                                if Directory.GetFiles(tfm, "*.xml").Length > 0 then
                                    let version =
                                        match Version.TryParse(Path.GetFileName versionDir) with
                                        | true, v -> v
                                        | _ -> Version(0, 0)

                                    version, tfm
                ]
            else
                [])
        |> List.sortByDescending fst
        |> List.map snd
        |> List.distinct

    /// The folders holding the reference assemblies' XML documentation
    /// (`packs/Microsoft.NETCore.App.Ref/<version>/ref/net<x>/`), newest version first.
    let referenceDocFolders () : string list =
        packDocFolders "Microsoft.NETCore.App.Ref"

    /// The reference documentation as whole files, one document per XML file with its members in file
    /// order: the newest Microsoft.NETCore.App.Ref, then the files only Microsoft.AspNetCore.App.Ref adds.
    /// Returns (file name, text) ordered by file name; empty when no reference pack is installed.
    let referenceDocumentFiles () : (string * string) list =
        let newest pack =
            match packDocFolders pack with
            | folder :: _ ->
                Directory.GetFiles(folder, "*.xml")
                |> Array.map (fun f -> Path.GetFileName f, f)
                |> List.ofArray
            | [] -> []

        let core = newest "Microsoft.NETCore.App.Ref"
        let coreNames = core |> List.map fst |> Set.ofList

        let aspNet =
            newest "Microsoft.AspNetCore.App.Ref"
            |> List.filter (fun (name, _) -> not (coreNames.Contains name))

        core @ aspNet
        |> List.sortWith (fun (a, _) (b, _) -> String.CompareOrdinal(a, b))
        |> List.choose (fun (name, file) ->
            let members =
                try
                    xmlDocumentation file
                with _ ->
                    []

            if members.IsEmpty then
                None
            else
                Some(name, String.Join("\n", members)))

    /// Keeps about `maxChars` characters of `documents`, spread evenly over the list (every k-th one).
    let spread (maxChars: int64) (documents: string list) : string list =
        let total = documents |> List.sumBy (fun d -> int64 d.Length)

        if total <= maxChars then
            documents
        else
            let stride = int (ceil (float total / float maxChars))

            documents
            |> List.indexed
            |> List.filter (fun (i, _) -> i % stride = 0)
            |> List.map snd

    /// The text bundled with the library: used when no .NET reference documentation is installed.
    let bundledText () : string =
        let assembly = typeof<Corpus>.Assembly
        use stream = assembly.GetManifestResourceStream "LongNet.fallback-corpus.txt"

        if isNull stream then
            ""
        else
            use reader = new StreamReader(stream, Encoding.UTF8)
            reader.ReadToEnd()

    /// The default corpus: the documentation text of the newest .NET reference pack found (about
    /// `maxChars` characters spread over all its files), else the bundled text split into paragraphs.
    /// Returns the documents and a description of the source.
    let defaultDocuments (maxChars: int64) : string list * string =
        let fromReferencePacks =
            referenceDocFolders ()
            |> List.tryPick (fun folder ->
                let files =
                    Directory.GetFiles(folder, "*.xml")
                    |> Array.sortWith (fun a b -> String.CompareOrdinal(a, b))

                let documents =
                    files
                    |> List.ofArray
                    |> List.collect (fun f ->
                        try
                            xmlDocumentation f
                        with _ ->
                            [])

                if documents.IsEmpty then
                    None
                else
                    Some(spread maxChars documents, $"{files.Length} XML documentation files in {folder}"))

        match fromReferencePacks with
        | Some found -> found
        | None ->
            let paragraphs =
                bundledText().Split("\n\n", StringSplitOptions.RemoveEmptyEntries)
                |> Array.map _.Trim()
                |> Array.filter (fun p -> p.Length > 0)
                |> List.ofArray

            paragraphs, "the text bundled with LongNet (no .NET reference documentation was found)"

    // The documents' token ids joined by the tokenizer's end-of-text id, if it has one.
    let private join (tokenizer: ITokenizer) (docs: string list) =
        let separator = tokenizer.EndOfText |> Option.toArray

        docs
        |> Array.ofList
        |> Array.Parallel.map tokenizer.Encode
        |> Array.filter (fun ids -> ids.Length > 0)
        |> Array.collect (fun ids -> Array.append ids separator)

    /// Tokenizes documents and holds out whole ones: those whose flag in `heldOut` is true form the
    /// validation tokens (in document order), the others the training tokens.
    let buildHeldOut
        (heldOut: bool list)
        (tokenizer: ITokenizer)
        (description: string)
        (documents: string list)
        : Result<Corpus, string> =
        if heldOut.Length <> documents.Length then
            invalidArg "heldOut" $"heldOut must have one flag per document ({documents.Length}), got {heldOut.Length}."

        let characters = documents |> List.sumBy (fun d -> int64 d.Length)

        if characters = 0L then
            Error $"the corpus ({description}) is empty; give a file or folder holding text."
        else
            let pick held =
                List.zip heldOut documents
                |> List.filter (fun (h, _) -> h = held)
                |> List.map snd

            Ok
                {
                    Description = description
                    Documents = documents.Length
                    Characters = characters
                    Train = join tokenizer (pick false)
                    Validation = join tokenizer (pick true)
                }

    /// Whether a reference-documentation file is held out: a third of the files, chosen by a stable hash
    /// (FNV-1a) of the file name, so the split is the same on every machine whatever files it has.
    let isHeldOutFile (fileName: string) : bool =
        let mutable hash = 2166136261u

        for c in fileName.ToLowerInvariant() do
            hash <- (hash ^^^ uint32 c) * 16777619u

        hash % uint32 referenceHeldOutShare = 0u

    /// Tokenizes documents and splits them: with at least `validationStride` documents, every
    /// `validationStride`-th document is held out; otherwise the last `validationTail` of the tokens.
    /// Documents are joined by the tokenizer's end-of-text id when it has one.
    let build (tokenizer: ITokenizer) (description: string) (documents: string list) : Result<Corpus, string> =
        if documents.Length >= validationStride then
            let heldOut =
                documents |> List.mapi (fun i _ -> i % validationStride = validationStride - 1)

            buildHeldOut heldOut tokenizer description documents
        else
            let characters = documents |> List.sumBy (fun d -> int64 d.Length)

            if characters = 0L then
                Error $"the corpus ({description}) is empty; give a file or folder holding text."
            else
                let all = join tokenizer documents
                let cut = all.Length - int (ceil (float all.Length * validationTail))

                Ok
                    {
                        Description = description
                        Documents = documents.Length
                        Characters = characters
                        Train = all.[.. cut - 1]
                        Validation = all.[cut..]
                    }

    /// The name that selects the built-in long-context corpus wherever a corpus path is asked for: the
    /// .NET reference documentation as whole files in document order (`referenceDocumentFiles`), a third
    /// of the files held out (`isHeldOutFile`).
    let referenceDocsName = "builtin:dotnet-docs"

    /// Documents read for a corpus, before tokenizing, with the rule that holds some out.
    type Source =
        {
            /// Where the text came from, for reports.
            Description: string
            /// The documents, in order.
            Documents: string list
            /// Per document, whether it is held out (Some flags), or the default rule of `build` (None).
            HeldOut: bool list option
        }

        /// The documents that are not held out (what a tokenizer may be learnt from).
        member s.TrainingDocuments: string list =
            match s.HeldOut with
            | Some flags ->
                List.zip flags s.Documents
                |> List.filter (fun (held, _) -> not held)
                |> List.map snd
            | None when s.Documents.Length >= validationStride ->
                s.Documents
                |> List.indexed
                |> List.filter (fun (i, _) -> i % validationStride <> validationStride - 1)
                |> List.map snd
            | None ->
                // the tail held out by `build` is a share of tokens; learn from all but the last document
                if s.Documents.Length > 1 then
                    List.take (s.Documents.Length - 1) s.Documents
                else
                    s.Documents

    /// Reads a corpus's documents: `referenceDocsName` for the built-in long-context corpus, else a text
    /// file or a folder of them.
    let readSource (path: string) : Result<Source, string> =
        if path = referenceDocsName then
            match referenceDocumentFiles () with
            | [] ->
                Error
                    $"{referenceDocsName}: no .NET reference documentation was found (packs/Microsoft.NETCore.App.Ref under the .NET installation); install the .NET SDK or give a text corpus."
            | files ->
                Ok
                    {
                        Description =
                            $"the .NET reference documentation ({files.Length} XML files as whole documents, a third held out by name)"
                        Documents = files |> List.map snd
                        HeldOut = Some(files |> List.map (fst >> isHeldOutFile))
                    }
        else
            readDocuments path
            |> Result.bind (fun documents ->
                if documents |> List.sumBy (fun d -> d.Length) = 0 then
                    Error $"corpus '{path}' is empty; give a file or folder holding text."
                else
                    Ok
                        {
                            Description = $"'{Path.GetFullPath path}'"
                            Documents = documents
                            HeldOut = None
                        })

    /// Tokenizes a source and splits it by its held-out rule.
    let ofSource (tokenizer: ITokenizer) (source: Source) : Result<Corpus, string> =
        match source.HeldOut with
        | Some flags -> buildHeldOut flags tokenizer source.Description source.Documents
        | None -> build tokenizer source.Description source.Documents

    /// Reads and tokenizes the corpus at `path` (a file or folder, or `referenceDocsName`).
    let load (tokenizer: ITokenizer) (path: string) : Result<Corpus, string> =
        readSource path |> Result.bind (ofSource tokenizer)
