from fineinstructions.cli import main

main()
