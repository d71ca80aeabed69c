//! Tests of the pest grammar (`grammar/template.pest`) rule by rule, and of the
//! operator precedence the Pratt parser builds on top of it.

use pest::{consumes_to, parses_to, Parser as _};
use transbordo::template::ast::{BinOp, Expr, LogicOp, Node, Root, Step, UnOp};
use transbordo::template::parse::{parse_expression, split, Piece, Rule, TemplateParser};

/// The rule matches the whole input.
fn full(rule: Rule, input: &str) -> bool {
    match TemplateParser::parse(rule, input) {
        Ok(mut pairs) => pairs
            .next()
            .is_some_and(|p| p.as_span().end() == input.len()),
        Err(_) => false,
    }
}

/// How many bytes of `input` the rule consumes, if it matches at all.
fn consumed(rule: Rule, input: &str) -> Option<usize> {
    TemplateParser::parse(rule, input)
        .ok()
        .and_then(|mut p| p.next())
        .map(|p| p.as_span().end())
}

/// `(rule, start, end)` of the direct children of a successful `template` parse.
fn template_parts(input: &str) -> Vec<(Rule, usize, usize)> {
    let mut pairs = TemplateParser::parse(Rule::template, input).expect("template parses");
    let top = pairs.next().expect("template pair");
    top.into_inner()
        .filter(|p| p.as_rule() != Rule::EOI)
        .map(|p| (p.as_rule(), p.as_span().start(), p.as_span().end()))
        .collect()
}

#[test]
fn template_splits_text_escapes_and_segments() {
    parses_to! {
        parser: TemplateParser,
        input: "a<? b ?>c",
        rule: Rule::template,
        tokens: [template(0, 9, [
            text(0, 1),
            segment(1, 8, [segment_body(3, 6)]),
            text(8, 9),
            EOI(9, 9)
        ])]
    };
    parses_to! {
        parser: TemplateParser,
        input: "\\<?x",
        rule: Rule::template,
        tokens: [template(0, 4, [escape(0, 3), text(3, 4), EOI(4, 4)])]
    };
    assert_eq!(
        template_parts("<? 1 ?><? 2 ?>"),
        vec![(Rule::segment, 0, 7), (Rule::segment, 7, 14)]
    );
    assert_eq!(template_parts("plain"), vec![(Rule::text, 0, 5)]);
    assert_eq!(template_parts(""), vec![]);
}

#[test]
fn segment_body_skips_close_marker_inside_string_literals() {
    // `?>` inside a quoted string does not end the segment.
    let src = "<? 'a ?> b' + \"?>\" ?> tail";
    let parts = template_parts(src);
    assert_eq!(parts[0], (Rule::segment, 0, 21));
    assert_eq!(parts[1], (Rule::text, 21, 26));
    let pieces = split(src).expect("splits");
    assert_eq!(
        pieces,
        vec![
            Piece::Segment {
                source: " 'a ?> b' + \"?>\" ".to_string(),
                offset: 2
            },
            Piece::Text(" tail".to_string()),
        ]
    );
}

#[test]
fn split_applies_escapes_and_reports_unterminated_segments() {
    assert_eq!(
        split("x \\<? y").unwrap(),
        vec![Piece::Text("x <? y".to_string())]
    );
    let err = split("ok <? a ?> then <? b").unwrap_err();
    assert_eq!(err.span, 16..18, "points at the unclosed `<?`");
    assert!(err.message.contains("unterminated"));
    assert!(TemplateParser::parse(Rule::template, "<? a").is_err());
}

#[test]
fn numbers() {
    for ok in [
        "0", "42", "3.14", ".5", "5.", "1e3", "1E-3", "2.5e+2", "007",
    ] {
        assert!(full(Rule::number, ok), "{ok} is a number");
    }
    // The rule stops where a number stops.
    assert_eq!(consumed(Rule::number, "1e"), Some(1));
    assert_eq!(consumed(Rule::number, "0x1f"), Some(1));
    assert_eq!(consumed(Rule::number, "1.2.3"), Some(3));
    for bad in ["", ".", "e3", "-1", "+1"] {
        assert!(
            consumed(Rule::number, bad).is_none(),
            "{bad:?} is not a number"
        );
    }
}

#[test]
fn strings() {
    for ok in [
        "''",
        "\"\"",
        "'a'",
        "'it\\'s'",
        "\"say \\\"hi\\\"\"",
        "'a\\nb'",
        "'\\u00e9'",
        "'\\u{1F600}'",
        "'?>'",
        "\"mixed ' quote\"",
        "'ação 😀'",
    ] {
        assert!(full(Rule::string, ok), "{ok} is a string");
    }
    for bad in ["'open", "\"open", "'a\"", "'\\'"] {
        assert!(!full(Rule::string, bad), "{bad} is not a string");
    }
    parses_to! {
        parser: TemplateParser,
        input: "'a\\'b'",
        rule: Rule::string,
        tokens: [string(0, 6)]
    };
}

#[test]
fn regexes() {
    parses_to! {
        parser: TemplateParser,
        input: "/^[0-9]+$/gi",
        rule: Rule::regex,
        tokens: [regex(0, 12, [regex_body(1, 9), regex_flags(10, 12)])]
    };
    // A `/` inside a class or escaped does not end the pattern.
    assert!(full(Rule::regex, "/[a/b]/"));
    assert!(full(Rule::regex, "/a\\/b/"));
    assert!(full(Rule::regex, "/x/"));
    assert!(!full(Rule::regex, "//"), "empty pattern");
    assert!(!full(Rule::regex, "/a\nb/"), "no newline in a pattern");
    assert!(!full(Rule::regex, "/abc"));
}

#[test]
fn context_vars_intents_entities() {
    parses_to! {
        parser: TemplateParser,
        input: "$ticket",
        rule: Rule::context_var,
        tokens: [context_var(0, 7, [ident_name(1, 7)])]
    };
    assert!(full(Rule::context_var, "$ação"));
    assert!(full(Rule::context_var, "$_x1"));
    assert!(!full(Rule::context_var, "$"));
    assert!(!full(Rule::context_var, "$1a"));

    parses_to! {
        parser: TemplateParser,
        input: "#falar_com-atendente",
        rule: Rule::intent,
        tokens: [intent(0, 20, [tag_name(1, 20)])]
    };
    assert!(!full(Rule::intent, "#"));

    parses_to! {
        parser: TemplateParser,
        input: "@cor",
        rule: Rule::entity,
        tokens: [entity(0, 4, [tag_name(1, 4)])]
    };
    parses_to! {
        parser: TemplateParser,
        input: "@cor:azul",
        rule: Rule::entity,
        tokens: [entity(0, 9, [tag_name(1, 4), entity_value(5, 9)])]
    };
    parses_to! {
        parser: TemplateParser,
        input: "@cidade:(São Paulo)",
        rule: Rule::entity,
        tokens: [entity(0, 20, [tag_name(1, 7), entity_text(9, 19)])]
    };
    assert!(!full(Rule::entity, "@"));
    assert!(!full(Rule::entity, "@a:(open"));
}

#[test]
fn arrays_and_objects() {
    for ok in ["[]", "[1]", "[1, 'a', [2]]", "[1, 2, ]", "[ ]"] {
        assert!(full(Rule::array, ok), "{ok} is an array");
    }
    for bad in ["[", "[1,,2]", "[,]", "[1 2]"] {
        assert!(!full(Rule::array, bad), "{bad} is not an array");
    }
    for ok in [
        "{}",
        "{a: 1}",
        "{'b c': 2, \"d\": 3, 4: 'x'}",
        "{a: {b: [1]}, }",
        "{null: 1}",
    ] {
        assert!(full(Rule::object, ok), "{ok} is an object");
    }
    for bad in ["{a}", "{a 1}", "{a: 1,, b: 2}", "{[a]: 1}", "{a: }"] {
        assert!(!full(Rule::object, bad), "{bad} is not an object");
    }
}

#[test]
fn pest_errors_carry_positions() {
    let e = TemplateParser::parse(Rule::expression, "1 + * 2").unwrap_err();
    match e.location {
        pest::error::InputLocation::Pos(p) => assert_eq!(p, 4),
        other => panic!("expected a position, got {other:?}"),
    }
    assert_eq!(e.line_col, pest::error::LineColLocation::Pos((1, 5)));
    // Our own errors keep the byte span of the offending character.
    let err = parse_expression("contact.name contact.age").unwrap_err();
    assert_eq!(err.span, 13..14);
    let err = parse_expression("(1 + 2").unwrap_err();
    assert_eq!(err.span, 6..6);
    let err = parse_expression("'é' + ä").unwrap_err();
    assert_eq!(&"'é' + ä"[err.span.clone()], "ä");
}

// ------------------------------------------------------------- precedence (AST)

fn ast(src: &str) -> Node {
    parse_expression(src).unwrap_or_else(|e| panic!("{src}: {e:?}"))
}

fn bin(n: &Node) -> (BinOp, &Node, &Node) {
    match &n.expr {
        Expr::Binary(op, a, b) => (*op, a, b),
        other => panic!("expected a binary operator, got {other:?}"),
    }
}

fn num(n: &Node) -> f64 {
    match n.expr {
        Expr::Number(x) => x,
        ref other => panic!("expected a number, got {other:?}"),
    }
}

#[test]
fn multiplication_binds_tighter_than_addition() {
    let n = ast("1 + 2 * 3");
    let (op, a, b) = bin(&n);
    assert_eq!(op, BinOp::Add);
    assert_eq!(num(a), 1.0);
    let (op2, x, y) = bin(b);
    assert_eq!((op2, num(x), num(y)), (BinOp::Mul, 2.0, 3.0));
    assert_eq!(n.span, 0..9);
}

#[test]
fn same_level_operators_associate_left() {
    let n = ast("10 - 4 - 3");
    let (op, a, b) = bin(&n);
    assert_eq!((op, num(b)), (BinOp::Sub, 3.0));
    let (op2, x, y) = bin(a);
    assert_eq!((op2, num(x), num(y)), (BinOp::Sub, 10.0, 4.0));
    let n = ast("2 * 3 % 4");
    let (op, a, _) = bin(&n);
    assert_eq!(op, BinOp::Rem);
    assert_eq!(bin(a).0, BinOp::Mul);
}

#[test]
fn parentheses_override_precedence() {
    let n = ast("(1 + 2) * 3");
    let (op, a, _) = bin(&n);
    assert_eq!(op, BinOp::Mul);
    assert_eq!(bin(a).0, BinOp::Add);
    assert_eq!(a.span, 0..7, "the parenthesised node spans its parentheses");
}

#[test]
fn comparison_equality_and_logic_levels() {
    // `<` binds tighter than `==`, which binds tighter than `&&`, then `||`.
    let n = ast("1 < 2 == true && 0 || 'x'");
    let Expr::Logic(LogicOp::Or, ors) = &n.expr else {
        panic!("top is ||: {n:?}")
    };
    assert_eq!(ors.len(), 2);
    let Expr::Logic(LogicOp::And, ands) = &ors[0].expr else {
        panic!("left of || is &&")
    };
    let (eq, lt, _) = bin(&ands[0]);
    assert_eq!(eq, BinOp::Eq);
    assert_eq!(bin(lt).0, BinOp::Lt);
    // `===` is one operator, not `==` followed by `=`.
    assert_eq!(bin(&ast("1 === 1")).0, BinOp::StrictEq);
    assert_eq!(bin(&ast("1 !== 1")).0, BinOp::StrictNe);
    assert_eq!(bin(&ast("1 <= 1")).0, BinOp::Le);
    assert_eq!(bin(&ast("1 >= 1")).0, BinOp::Ge);
}

#[test]
fn logic_chains_are_flattened() {
    let n = ast("a ?? b ?? c".replace(['a', 'b', 'c'], "$v").as_str());
    let Expr::Logic(LogicOp::Coalesce, ops) = &n.expr else {
        panic!("?? chain: {n:?}")
    };
    assert_eq!(ops.len(), 3);
}

#[test]
fn ternary_is_lowest_and_right_associative() {
    let n = ast("1 ? 2 : 3 ? 4 : 5");
    let Expr::Cond(c, a, b) = &n.expr else {
        panic!("ternary: {n:?}")
    };
    assert_eq!((num(c), num(a)), (1.0, 2.0));
    assert!(matches!(b.expr, Expr::Cond(..)), "else branch nests");
    let n = ast("0 || 1 ? 'a' : 'b'");
    let Expr::Cond(c, _, _) = &n.expr else {
        panic!("ternary over ||")
    };
    assert!(matches!(c.expr, Expr::Logic(LogicOp::Or, _)));
}

#[test]
fn unary_operators_bind_tighter_than_binary() {
    let n = ast("-$x * 2");
    let (op, a, _) = bin(&n);
    assert_eq!(op, BinOp::Mul);
    assert!(matches!(a.expr, Expr::Unary(UnOp::Neg, _)));
    // A negative literal folds into the number.
    assert_eq!(num(&ast("-3")), -3.0);
    let n = ast("!!$x");
    let Expr::Unary(UnOp::Not, inner) = &n.expr else {
        panic!("!")
    };
    assert!(matches!(inner.expr, Expr::Unary(UnOp::Not, _)));
    let n = ast("!0 + 1");
    let (op, a, _) = bin(&n);
    assert_eq!(op, BinOp::Add);
    assert!(matches!(a.expr, Expr::Unary(UnOp::Not, _)));
}

#[test]
fn paths_build_steps() {
    let n = ast("$var.field[2]['k']");
    let Expr::Path {
        root,
        steps,
        optional,
    } = &n.expr
    else {
        panic!("path: {n:?}")
    };
    assert_eq!(*root, Root::Context);
    assert_eq!(
        steps,
        &vec![
            Step::Key("var".into()),
            Step::Key("field".into()),
            Step::Index(2),
            Step::Key("k".into())
        ]
    );
    assert!(!optional);
    let n = ast("contact?.extra.país");
    let Expr::Path {
        optional, steps, ..
    } = &n.expr
    else {
        panic!("path")
    };
    assert!(optional);
    assert_eq!(steps[1], Step::Key("país".into()));
    assert!(matches!(
        ast("entities[$i]").expr,
        Expr::Path { ref steps, .. } if matches!(steps[0], Step::Computed(_))
    ));
}

#[test]
fn filters_apply_to_everything_on_their_left() {
    let n = ast("contact.name + 'x' | upper");
    let Expr::Filter(inner, name, args) = &n.expr else {
        panic!("filter: {n:?}")
    };
    assert_eq!(name, "upper");
    assert!(args.is_empty());
    assert_eq!(bin(inner).0, BinOp::Add);
    // `||` is not a pipe.
    assert!(matches!(ast("1 || 2").expr, Expr::Logic(LogicOp::Or, _)));
}
