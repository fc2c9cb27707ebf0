from fineinstructions.interface.cli import main

main()
